"""Tune the RAG prompt (instruction, passage budget) for a small model by measurement, on one split.

``python -m tools.eval.tune_rag --url URL --api-key KEY --tag tune`` retrieves each question's
passages once through the tenant's ``/v1/kb/search`` (what the RAG routes get), then renders each
candidate prompt with the serving code's own ``PromptBuilder`` and answers greedily with the model
loaded here, and prints answer-contained, F1 and citation precision per candidate. Tune on
``--tag tune``; report on ``--tag heldout`` (``adept eval --tag heldout``), which the tuning never saw.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from tools.eval import metrics as m
from tools.eval.routes import DEFAULT_SYSTEM_PROMPT


@dataclass(frozen=True)
class Candidate:
    name: str
    instruction: str
    top_k: int
    title_last: bool = False  # the passage's text first, its document's title after it
    examples: tuple[dict[str, str], ...] = ()  # worked exchanges before the question (llm.rag_examples)
    sentences: int | None = None  # each passage as its best N sentences (llm.rag_passage_sentences)
    extractive: bool = False  # the answer copy-constrained to the shown passages (llm.rag_extractive)


EXTRACTIVE = (
    "Answer the question from the numbered passages below. Start with the answer itself, copied "
    "word for word from the passage that states it, then cite that passage as [n]. Use as few "
    "words as possible. If no passage answers it, say you don't know."
)
EXAMPLE_LED = (
    "Answer with the exact words from the passages below that answer the question, then the number "
    "of the passage in brackets, for example: 0.80 m [2]. Do not explain. If the passages do not "
    "answer the question, say you don't know."
)


AFTER = (
    "{passages}\n\nQuestion: {question}\n"
    "Answer the question in as few words as possible, with the words of the passage that answers it, "
    "then cite that passage as [n]."
)


SHORT = (
    "Answer the question with a few words copied from the passages below, then cite the passage "
    "as [n]. If the passages do not contain the answer, say so."
)


# The instruction without the citation the extractive grammar leaves out of a base model's answer.
NO_CITE = "Answer with the shortest phrase copied from the passage."


# The layout before this session's tuning (instruction, passages and question in one user turn).
PREVIOUS = (
    "Answer the question using the numbered context passages below. Cite the passages you use as [n]. "
    "If the passages do not contain the answer, say so."
)
PREVIOUS_TURN = PREVIOUS + "\n\n{passages}\n\nQuestion: {question}"


def candidates(default_instruction: str) -> list[Candidate]:
    """What was measured on the tune half (SmolLM2-135M, greedy, 20 tokens; see the README's eval section).

    ``shipped-k1-s1`` is the platform's default (``llm.rag_instruction``, ``llm.rag_examples``, the
    ``auto`` passage budget of one passage, the ``auto`` one sentence of it and the ``auto`` extractive
    answers for a model this small).
    """
    from adept.config.llm import DEFAULT_RAG_EXAMPLES

    shots = tuple(DEFAULT_RAG_EXAMPLES)
    return [
        Candidate(
            "shipped-k1-s1",
            default_instruction,
            1,
            title_last=True,
            examples=shots,
            sentences=1,
            extractive=True,
        ),
        Candidate("free-k1-s1", default_instruction, 1, title_last=True, examples=shots, sentences=1),
        Candidate(
            "shipped-k1-s1-2shots",
            default_instruction,
            1,
            title_last=True,
            examples=shots[:2],
            sentences=1,
            extractive=True,
        ),
        Candidate(
            "shipped-k1-s1-nocite",
            NO_CITE,
            1,
            title_last=True,
            examples=tuple({**e, "answer": e["answer"].rsplit(" [", 1)[0]} for e in shots),
            sentences=1,
            extractive=True,
        ),
        Candidate("shipped-k1-s2", default_instruction, 1, title_last=True, examples=shots, sentences=2),
        Candidate("shipped-k1", default_instruction, 1, title_last=True, examples=shots),
        Candidate("shipped-k2", default_instruction, 2, title_last=True, examples=shots),
        Candidate("shipped-k4", default_instruction, 4, title_last=True, examples=shots),
        Candidate("before", PREVIOUS_TURN, 4),
        Candidate("extractive-k2", EXTRACTIVE, 2),
        Candidate("example-k2", EXAMPLE_LED, 2),
        Candidate("after-k2", AFTER, 2),
        Candidate("after-k4", AFTER, 4),
        Candidate("titlelast-previous-k4", PREVIOUS_TURN, 4, title_last=True),
        Candidate("titlelast-short-k3", SHORT, 3, title_last=True),
    ]


def passage(hit: dict, title_last: bool) -> str:
    title, text = hit.get("title") or "", hit["text"]
    if not title:
        return text
    return f"{text}\n(Source: {title})" if title_last else f"{title}\n{text}"


def ordered(hits: list[dict]) -> list[dict]:
    """The hits in the order the gateway puts them into a prompt (by their best sentence)."""
    from services.gateway.chat import by_best_sentence
    from services.retrieval.protocol import SearchHit

    return [h.model_dump() for h in by_best_sentence([SearchHit.model_validate(h) for h in hits])]


def excerpts(hit: dict) -> list[str]:
    """The hit's best 1, 2, ... highlighted sentences, rendered by the gateway's own code."""
    from services.gateway.chat import passage_excerpts
    from services.retrieval.protocol import SearchHit

    return passage_excerpts(SearchHit.model_validate(hit))


def _score(pred: str, item: Any, docs: list[str], cited: list[int]) -> dict[str, float | None]:
    cited_docs = [docs[n - 1] for n in cited] or docs
    return {
        "contains": m.contains(pred, item.answer),
        "f1": m.token_f1(pred, item.answer),
        "citation_precision": m.citation_precision(cited_docs, item.reference_documents),
    }


def main(argv: list[str] | None = None) -> int:
    import torch
    from xgrammar.contrib.hf import LogitsProcessor

    from adept.config.llm import DEFAULT_RAG_INSTRUCTION
    from adept.evalset import load_eval_set
    from adept.models import load_causal_lm, load_tokenizer, resolve_model
    from services.llm.engine import _eos_ids  # the replica's own end-of-turn tokens
    from services.llm.extractive import extractive_grammar
    from services.llm.prompting import PromptBuilder, cited_numbers
    from services.llm.protocol import GenerateRequest
    from services.llm.structured import GrammarBook
    from tools.eval.client import PlatformClient

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--questions", default="adept/demo/eval_questions.jsonl")
    ap.add_argument("--tag", default="tune")
    ap.add_argument("--model", default="bundled:smollm2-135m-instruct")
    ap.add_argument("--max-tokens", type=int, default=20)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--only", default="", help="Comma-separated candidate names (default: all).")
    ap.add_argument("--limit", type=int, default=0, help="Only the first N questions (0: all).")
    args = ap.parse_args(argv)

    items = load_eval_set(args.questions).with_tag(args.tag).items
    items = items[: args.limit] if args.limit else items
    with PlatformClient(args.url, args.api_key) as client:
        hits = [ordered(client.search(i.question, 4, highlights=3)) for i in items]
    path = resolve_model(args.model)
    tok, model = load_tokenizer(path), load_causal_lm(path, device="cpu")
    model.eval()
    book = GrammarBook(tok, vocab_size=model.config.vocab_size, stop_ids=_eos_ids(model, tok))
    rows = []
    wanted = [n for n in args.only.split(",") if n]
    for cand in [c for c in candidates(DEFAULT_RAG_INSTRUCTION) if not wanted or c.name in wanted]:
        builder = PromptBuilder(
            tok,
            max_model_len=args.max_model_len,
            rag_instruction=cand.instruction,
            examples=list(cand.examples),
            max_passages=cand.top_k,
            max_sentences=cand.sentences,
        )
        scores = []
        for item, h in zip(items, hits, strict=True):
            top = h[: cand.top_k]
            passages = [passage(x, cand.title_last) for x in top]
            req = GenerateRequest(
                messages=[
                    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                    {"role": "user", "content": item.question},
                ],
                passages=passages,
                passage_excerpts=[excerpts(x) for x in top],
                max_tokens=args.max_tokens,
                temperature=0.0,
            )
            prompt = builder.build(req, args.max_tokens)
            constrained = {}
            grammar = extractive_grammar(prompt.shown) if cand.extractive else None
            if grammar is not None:  # as the replica decodes it (services/llm/extractive.py)
                constrained["logits_processor"] = [LogitsProcessor(book.compile_ebnf(grammar))]
            with torch.no_grad():
                out = model.generate(
                    torch.tensor([prompt.ids]), max_new_tokens=args.max_tokens, do_sample=False, **constrained
                )
            pred = tok.decode(out[0, len(prompt.ids) :], skip_special_tokens=True).strip()
            docs = [str(top[i]["document_id"]) for i in prompt.passages_used]
            scores.append(_score(pred, item, docs, cited_numbers(pred, len(docs))))
            print(
                json.dumps({"candidate": cand.name, "q": item.question[:60], "pred": pred[:100]}), flush=True
            )
        row = {"candidate": cand.name, "n": len(scores)}
        for k in ("contains", "f1", "citation_precision"):
            row[k] = round(m.mean(s[k] for s in scores) or 0.0, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n".join(json.dumps(r) for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
