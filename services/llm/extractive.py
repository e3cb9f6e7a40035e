"""Extractive RAG answers: a small model's answer is copied, word for word, from a passage it was shown.

Shown the right sentence, the bundled 135M model still writes numbers that are not in it ("2 months"
from "over up to 6 months", "100 m" from "the first 30 m"). With ``llm.rag_extractive`` the answer
of a RAG request is decoded under a grammar built from the passages the prompt showed: any run of
consecutive words of one of them, or "I don't know." when none answers. The grammar goes through the
same structured-output path as ``response_format`` (xgrammar on the HF engine, vLLM's structured
outputs on GPUs), so both engines keep one contract.

It applies to chat requests with passages in their prompt and no ``response_format`` or tools of
their own. An adapter's answer opens with such a run and may then go on, after " (" or " [", with
what its tenant trained it to add (the demo's house format: ``8 cal/cm² (LGS-100). [1]``): the
demo adapter kept its format and stopped inventing numbers (``$1.25`` for ``$1,250``). A base model's
answer is the run alone: given the same way out, the bundled model cut its quotes short to cite
them (answer-contained on the demo's held-out questions 0.70 -> 0.55).
"""

from __future__ import annotations

import json
import re

from adept.config.llm import SMALL_MODEL_PARAMETERS
from adept.passages import without_source
from services.llm.prompting import Prompt
from services.llm.protocol import GenerateRequest

REFUSAL = "I don't know."
# Above this many words in the shown passages the grammar would cost more to compile than the answer
# to decode (a large model shown whole passages, with `rag_extractive: true`): answers go unconstrained.
MAX_WORDS = 1000
_TRAILING_RE = re.compile(r"^(.*?)([.,;:!?]*)$", re.DOTALL)


def extractive_enabled(setting: bool | str | None, n_parameters: int | None) -> bool:
    """``llm.rag_extractive``: ``auto`` is on for a model under ``SMALL_MODEL_PARAMETERS`` (known size)."""
    if isinstance(setting, bool):
        return setting
    if setting in (None, "auto"):
        return n_parameters is not None and n_parameters < SMALL_MODEL_PARAMETERS
    raise ValueError(f"rag_extractive must be true, false or 'auto', not {setting!r}")


def extractive_applies(enabled: bool, req: GenerateRequest, prompt: Prompt, adapter_id: str) -> str | None:
    """The extractive grammar for ``req`` where it applies (a chat request showing passages, with no
    ``response_format`` or tools of its own; an adapter's with its free tail), else ``None``."""
    if not enabled or not prompt.shown or req.prompt is not None or req.guided is not None or req.tools:
        return None
    return extractive_grammar(prompt.shown, tail=bool(adapter_id))


def extractive_grammar(passages: list[str] | tuple[str, ...], *, tail: bool = False) -> str | None:
    """EBNF (xgrammar's dialect, which vLLM's structured outputs also take) of an answer that is a run of
    consecutive words of one of ``passages`` (each without its source line) — with ``tail``, optionally
    followed by " (" or " [" and anything — or ``REFUSAL``; ``None`` when there is nothing to copy
    from, or more than ``MAX_WORDS`` words."""
    texts = [without_source(p).split() for p in passages]
    if not any(texts) or sum(map(len, texts)) > MAX_WORDS:
        return None
    rules: list[str] = []
    starts: list[str] = []
    for p, words in enumerate(texts):
        for i, word in enumerate(words):
            name = f"w{p}_{i}"
            starts.append(name)
            more = f' (" " w{p}_{i + 1})?' if i + 1 < len(words) else ""
            core, punct = _TRAILING_RE.match(word).groups()
            # A quote may end before a word's trailing punctuation ("cal/cm²" of "cal/cm².").
            if core and punct:
                rules.append(f"{name} ::= {_literal(core)} ({_literal(punct)}{more})?")
            else:
                rules.append(f"{name} ::= {_literal(word)}{more}")
    answer = 'span (" (" | " [") rest | span' if tail else "span"
    head = [f"root ::= {answer} | {_literal(REFUSAL)}", "span ::= " + " | ".join(starts)]
    if tail:
        head.append(r"rest ::= [^\x00]*")
    return "\n".join(head + rules) + "\n"


def _literal(text: str) -> str:
    # A JSON string is an EBNF string literal (\" and \\ escaped); other characters stay as they are.
    return json.dumps(text, ensure_ascii=False)
