"""Prompt rendering: chat template, RAG passages fitted under the token budget, exact token counts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from adept.config.llm import SMALL_MODEL_PARAMETERS, SMALL_MODEL_SENTENCES
from adept.errors import InvalidRequest
from services.llm.protocol import GenerateRequest
from services.llm.structured import chat_messages, template_kwargs

# A RAG instruction holding both slots is a template for the whole user turn (the instruction may then
# come after the passages, next to where the answer starts: what a small model follows best).
PASSAGES_SLOT = "{passages}"
QUESTION_SLOT = "{question}"

# `[1]`, `[2, 3]`, `[1][3]`: how the RAG instruction asks the model to cite the numbered passages.
_CITATION_RE = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def cited_numbers(text: str, n_passages: int) -> list[int]:
    """The passage numbers (1-based, as the prompt numbered them) that ``text`` cites, in first-cited order;
    numbers outside ``1..n_passages`` are ignored."""
    seen: dict[int, None] = {}
    for group in _CITATION_RE.findall(text):
        for part in group.split(","):
            n = int(part)
            if 1 <= n <= n_passages:
                seen.setdefault(n)
    return list(seen)


def passage_budget(setting: int | str | None, n_parameters: int | None) -> int | None:
    """Most passages per RAG prompt for ``setting`` (``llm.rag_max_passages``): ``auto`` is 1 for a model
    under ``SMALL_MODEL_PARAMETERS`` (``n_parameters`` known), otherwise no limit (``None``)."""
    return _small_model_setting(setting, n_parameters, 1)


def sentence_budget(setting: int | str | None, n_parameters: int | None) -> int | None:
    """Sentences shown per RAG passage for ``setting`` (``llm.rag_passage_sentences``): ``auto`` is
    ``SMALL_MODEL_SENTENCES`` for a model under ``SMALL_MODEL_PARAMETERS``, otherwise the whole passage
    (``None``)."""
    return _small_model_setting(setting, n_parameters, SMALL_MODEL_SENTENCES)


def _small_model_setting(setting: int | str | None, n_parameters: int | None, small_value: int) -> int | None:
    if setting is None or isinstance(setting, int):
        return setting
    if setting == "all":
        return None
    small = n_parameters is not None and n_parameters < SMALL_MODEL_PARAMETERS
    return small_value if small else None


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: its token ids, which passages went into it (indices, in prompt order) and
    those passages as the prompt shows them (an excerpt of each where ``max_sentences`` applies)."""

    ids: list[int]
    passages_used: list[int]
    shown: tuple[str, ...] = ()


class PromptBuilder:
    """Renders requests with the tokenizer's chat template and fits passages into the context window.

    A chat RAG request is laid out for small models: the instruction joins the system turn, the worked
    ``examples`` follow it as user/assistant turns, and the last user turn holds only the numbered
    passages and the question, last. An instruction holding ``{passages}`` and ``{question}`` is
    instead a template of that last user turn (no examples).

    Args:
        tokenizer: a transformers tokenizer (ideally with a chat template).
        max_model_len: the context window in tokens.
        rag_instruction: the RAG instruction (see above).
        examples: worked exchanges (``question``, numbered ``passages``, ``answer``) put before the question.
        max_passages: most passages put into a prompt (``None``: as many as fit).
        max_sentences: show each passage as its best this many sentences, where the request carries
            them (``GenerateRequest.passage_excerpts``; ``None``: whole passages).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_model_len: int,
        rag_instruction: str,
        examples: list[dict[str, str]] | None = None,
        max_passages: int | None = None,
        max_sentences: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.rag_instruction = rag_instruction
        self.examples = list(examples or [])
        self.max_passages = max_passages
        self.max_sentences = max_sentences

    def encode(self, text: str) -> list[int]:
        # Templates already contain their special tokens (BOS, role markers): add none.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _context(self, passages: list[str]) -> str:
        numbered = "\n\n".join(f"[{n}] {p.strip()}" for n, p in enumerate(passages, 1))
        return f"{self.rag_instruction}\n\n{numbered}"

    @property
    def _is_template(self) -> bool:
        return PASSAGES_SLOT in self.rag_instruction and QUESTION_SLOT in self.rag_instruction

    def _rag_turn(self, passages: list[str], question: str) -> str:
        """The user turn of a RAG request: the instruction as a template (``{passages}``, ``{question}``),
        or the numbered passages and the question, last."""
        numbered = "\n\n".join(f"[{n}] {p.strip()}" for n, p in enumerate(passages, 1))
        if self._is_template:
            return self.rag_instruction.replace(PASSAGES_SLOT, numbered).replace(QUESTION_SLOT, question)
        return f"{numbered}\n\nQuestion: {question}"

    def _rag_messages(self, messages: list[dict[str, Any]], passages: list[str]) -> list[dict[str, Any]]:
        """``messages`` with the passages in the last user turn (and, unless the instruction is a template,
        the instruction in the system turn and the worked examples before the conversation)."""
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:
            return [*messages, {"role": "user", "content": self._context(passages)}]
        out = list(messages)
        out[last_user] = {"role": "user", "content": self._rag_turn(passages, out[last_user]["content"])}
        if self._is_template:
            return out
        shots: list[dict[str, Any]] = []
        for ex in self.examples:
            shots.append({"role": "user", "content": f"{ex['passages']}\n\nQuestion: {ex['question']}"})
            shots.append({"role": "assistant", "content": ex["answer"]})
        if out and out[0]["role"] == "system" and isinstance(out[0].get("content"), str):
            system = {"role": "system", "content": f"{out[0]['content']}\n\n{self.rag_instruction}"}
            return [system, *shots, *out[1:]]
        return [{"role": "system", "content": self.rag_instruction}, *shots, *out]

    def render(self, req: GenerateRequest, passages: list[str]) -> str:
        """The prompt text of ``req`` with ``passages`` (may be empty) as numbered context."""
        if req.prompt is not None:
            return f"{self._context(passages)}\n\n{req.prompt}" if passages else req.prompt
        messages = chat_messages(req, self.tokenizer)  # tools and tool turns (structured.py)
        if passages:
            messages = self._rag_messages(messages, passages)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **template_kwargs(req, self.tokenizer)
            )
        # A base model without a template: a plain transcript that ends where the answer starts.
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])

    def passage_texts(self, req: GenerateRequest) -> list[str]:
        """Each passage as the prompt shows it: its excerpt of ``max_sentences`` sentences (or its longest
        shorter one) where the request carries excerpts, else the whole passage."""
        if self.max_sentences is None:
            return list(req.passages)
        out = []
        for i, whole in enumerate(req.passages):
            excerpts = req.passage_excerpts[i] if i < len(req.passage_excerpts) else []
            out.append(excerpts[min(self.max_sentences, len(excerpts)) - 1] if excerpts else whole)
        return out

    def build(self, req: GenerateRequest, max_tokens: int) -> Prompt:
        """Render ``req`` with as many passages as fit in ``max_model_len - max_tokens`` tokens.

        Passages are taken best first, at most ``max_passages``; one that does not fit is skipped and
        smaller later ones may still go in.

        Raises:
            InvalidRequest: the prompt alone does not leave room for ``max_tokens``.
        """
        limit = self.max_model_len - max_tokens
        ids = self.encode(self.render(req, []))
        if len(ids) > limit:
            raise InvalidRequest(
                f"the prompt is {len(ids)} tokens; with max_tokens={max_tokens} it exceeds the model's "
                f"context window of {self.max_model_len} tokens: shorten it or lower max_tokens",
                code="context_length_exceeded",
                param="messages" if req.messages is not None else "prompt",
            )
        texts = self.passage_texts(req)
        used: list[int] = []
        for i in range(len(texts)):
            if self.max_passages is not None and len(used) >= self.max_passages:
                break
            candidate = self.encode(self.render(req, [texts[j] for j in [*used, i]]))
            if len(candidate) <= limit:
                used.append(i)
                ids = candidate
        return Prompt(ids=ids, passages_used=used, shown=tuple(texts[i] for i in used))
