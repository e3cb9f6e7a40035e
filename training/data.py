"""Training data: JSONL examples -> chat-template tokens with assistant-only labels -> packed rows.

Three line formats are read (detected per line unless ``format`` says otherwise; the parser is the
kernel's ``adept.finetuning.examples``, which also validates uploads to ``POST /v1/files``):

- chat, the OpenAI fine-tuning format: ``{"messages": [{"role": "user", "content": "..."}, ...]}``
  (an assistant message with ``"weight": 0`` is context, not trained on);
- ShareGPT: ``{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}``;
- ``{"prompt": "...", "completion": "..."}``.

Every conversation is rendered with the tokenizer's own chat template, so the model is trained
on exactly the text it sees when served. Labels are ``-100`` everywhere except on assistant
turns (their content and the end-of-turn tokens), so the loss never teaches the model to write
the user's part.

Packing concatenates short examples into rows of up to ``max_seq_length`` tokens. Position ids
restart at 0 for each example and no attention mask is passed: transformers (5.x) then builds a
block-diagonal causal mask from the position ids (``find_packed_sequence_indices``) for the sdpa
and eager kernels, and flash-attention uses the same position ids as varlen boundaries, so an
example never attends to its neighbours (only without a KV cache: the recipe passes
``use_cache=False``, since transformers skips packed-sequence detection when a cache is present).
The trade-off: a 4D block mask costs O(L^2) memory on
sdpa/eager (as any causal mask does), and a model whose attention ignores position ids for masking
would leak; Phi-3 and llama-style models are covered by a unit test comparing packed and unpacked
logits.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adept.errors import InvalidRequest, NotFound
from adept.finetuning.examples import check_examples
from adept.finetuning.examples import parse_example as parse_example  # the one definition of a valid line
from adept.jsonl import read_bytes

IGNORE_INDEX = -100
MAX_REPORTED_PROBLEMS = 20


class DatasetError(InvalidRequest):
    """The dataset cannot be used; ``problems`` lists each bad line as ``file:line: why``."""

    code = "invalid_dataset"

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        more = len(self.problems) - len(shown)
        lines = [message, *(f"  - {p}" for p in shown)] + ([f"  ... and {more} more"] if more > 0 else [])
        super().__init__("\n".join(lines), code=self.code)


@dataclass
class Row:
    """One training sequence: token ids, labels (-100 = no loss) and position ids (restart per example)."""

    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PreparedData:
    """What the driver hands to the workers: rows ready to batch, and facts for the manifest."""

    train: list[Row]
    eval: list[Row]
    dataset_hash: str
    stats: dict[str, Any] = field(default_factory=dict)


# -- reading ---------------------------------------------------------------------------------
def read_examples(
    path: str, fmt: str = "auto", *, skip_invalid: bool = False
) -> tuple[list[list[dict]], list[str], bytes]:
    """Parse a JSONL file (local path or fsspec URI); returns (conversations, problems as ``file:line: why``, raw bytes).

    Raises:
        DatasetError: any malformed line (unless ``skip_invalid``), or no usable example at all.
    """
    try:
        raw = read_bytes(path)
    except NotFound:
        raise DatasetError(f"dataset file not found: {path}") from None
    checked = check_examples(raw, fmt, source=path)
    examples, bad = checked.examples, checked.problems
    problems = [p.at(path) for p in bad]
    if problems and not skip_invalid:
        raise DatasetError(
            f"{path}: {len(problems)} malformed line(s) (set data.skip_invalid=true to skip them):", problems
        )
    if not examples:
        why = "all lines are invalid" if problems else "it has no examples"
        raise DatasetError(f"{path}: cannot train: {why}", problems)
    return examples, problems, raw


# -- rendering -------------------------------------------------------------------------------
def _template(tokenizer: Any, msgs: list[dict], generation_prompt: bool) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in msgs]
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=generation_prompt)


def render_example(
    tokenizer: Any, msgs: list[dict], max_seq_length: int
) -> tuple[list[int], list[int], bool]:
    """Tokens and labels of one conversation; labels only on trained assistant turns.

    The text is cut at assistant-turn boundaries found by rendering growing prefixes of the
    conversation (the template's prompt for turn *i* must be a prefix of the full text), and each
    piece is tokenized on its own, as a served prompt followed by generated tokens would be.

    Returns:
        (input_ids, labels, truncated)
    """
    full = _template(tokenizer, msgs, False)
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if len(t) > 1]
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(msgs):
        if not m["train"]:
            continue
        prompt_text = _template(tokenizer, msgs[:i], True) if i else ""
        # A template may end a conversation differently from a turn (Phi-3 appends EOS only at the
        # very end): the turn ends where the text up to it stops agreeing with the full text.
        end = _common_prefix_len(_template(tokenizer, msgs[: i + 1], False), full)
        end = _special_token_start(full, end, specials)
        if not full.startswith(prompt_text) or end <= len(prompt_text):
            raise DatasetError(
                "the tokenizer's chat template does not render conversations prefix-consistently; "
                "assistant-only labels cannot be placed"
            )
        spans.append((len(prompt_text), end))
    ids: list[int] = []
    labels: list[int] = []
    if tokenizer.bos_token and not full.startswith(tokenizer.bos_token) and _adds_bos(tokenizer):
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    cursor = 0
    for start, end in [*spans, (len(full), len(full))]:
        for a, b, train in ((cursor, start, False), (start, end, True)):
            if b > a:
                piece = tokenizer(full[a:b], add_special_tokens=False)["input_ids"]
                ids.extend(piece)
                labels.extend(piece if train else [IGNORE_INDEX] * len(piece))
        cursor = max(cursor, end)
    truncated = len(ids) > max_seq_length
    return ids[:max_seq_length], labels[:max_seq_length], truncated


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _special_token_start(text: str, pos: int, specials: list[str]) -> int:
    """Move ``pos`` back to the start of a special token it cuts through (``<|end|>\\n<|`` -> before ``<|``)."""
    for tok in specials:
        for k in range(1, len(tok)):
            if pos - k >= 0 and text.startswith(tok, pos - k):
                return pos - k
    return pos


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


# -- packing and batching ----------------------------------------------------------------------
def pack(examples: list[tuple[list[int], list[int]]], max_seq_length: int) -> list[Row]:
    """First-fit packing into rows of at most ``max_seq_length`` tokens, in the given order.

    The first label of every example is masked so no loss ever crosses an example boundary.
    """
    bins: list[list[tuple[list[int], list[int]]]] = []
    room: list[int] = []
    window = 64  # only the most recent open rows are searched: O(n) instead of O(n^2), near-identical fill
    for ex in examples:
        n = len(ex[0])
        for j in range(max(0, len(bins) - window), len(bins)):
            if room[j] >= n:
                bins[j].append(ex)
                room[j] -= n
                break
        else:
            bins.append([ex])
            room.append(max_seq_length - n)
    return [_row(b) for b in bins]


def _row(parts: list[tuple[list[int], list[int]]]) -> Row:
    ids, labels, pos = [], [], []
    for p_ids, p_labels in parts:
        ids.extend(p_ids)
        labels.extend([IGNORE_INDEX, *p_labels[1:]])
        pos.extend(range(len(p_ids)))
    return Row(np.asarray(ids, np.int32), np.asarray(labels, np.int32), np.asarray(pos, np.int32))


def collate(rows: list[Row], pad_id: int, packed: bool) -> dict[str, Any]:
    """Pad rows to the longest one into tensors.

    Packed batches carry ``position_ids`` and no attention mask (padding becomes its own
    segment, positions 0..k, fully masked from the loss); unpacked batches carry an attention mask.
    """
    import torch

    width = max(len(r) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r)
        input_ids[i, :k] = torch.from_numpy(r.input_ids.astype(np.int64))
        labels[i, :k] = torch.from_numpy(r.labels.astype(np.int64))
        position_ids[i, :k] = torch.from_numpy(r.position_ids.astype(np.int64))
        position_ids[i, k:] = torch.arange(width - k)
        attention[i, :k] = 1
    batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels}
    if packed:
        batch["position_ids"] = position_ids
        # The documents of the rows laid end to end (padding is one more): what per-document
        # attention splits a flattened batch by (training/loss.py).
        batch["doc_lengths"] = doc_lengths(position_ids)
    else:
        batch["attention_mask"] = attention
    batch["num_tokens"] = int(attention.sum())
    return batch


def doc_lengths(position_ids: Any) -> list[int]:
    """Lengths of the documents of packed rows laid end to end (each starts where its position is 0)."""
    import torch

    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).flatten().tolist()
    return [b - a for a, b in zip(starts, [*starts[1:], flat.numel()], strict=True)]


def epoch_order(n_rows: int, epoch: int, seed: int) -> list[int]:
    """The deterministic row order of one epoch (same on every worker, every restart)."""
    order = list(range(n_rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


# -- the whole preparation --------------------------------------------------------------------
def prepare(data_cfg: Any, tokenizer: Any, seed: int) -> PreparedData:
    """Read, validate, split, render, mask and (optionally) pack a dataset on the driver.

    Raises:
        DatasetError: malformed lines, an empty dataset, or nothing left to train on.
    """
    train_ex, skipped, raw = read_examples(data_cfg.path, data_cfg.format, skip_invalid=data_cfg.skip_invalid)
    digest = hashlib.sha256(raw)
    rng = random.Random(seed)
    if data_cfg.validation_path:
        eval_ex, skipped_eval, raw_eval = read_examples(
            data_cfg.validation_path, data_cfg.format, skip_invalid=data_cfg.skip_invalid
        )
        skipped += skipped_eval
        digest.update(raw_eval)
        rng.shuffle(train_ex)
    else:
        rng.shuffle(train_ex)
        n_eval = round(len(train_ex) * data_cfg.validation_split)
        n_eval = min(n_eval, len(train_ex) - 1)
        eval_ex, train_ex = train_ex[:n_eval], train_ex[n_eval:]
    stats: dict[str, Any] = {"invalid_lines": len(skipped), "truncated": 0, "dropped_too_long": 0}

    def render_all(examples: list[list[dict]]) -> list[tuple[list[int], list[int]]]:
        out = []
        for msgs in examples:
            ids, labels, truncated = render_example(tokenizer, msgs, data_cfg.max_seq_length)
            stats["truncated"] += int(truncated)
            if sum(label != IGNORE_INDEX for label in labels[1:]) == 0:
                stats["dropped_too_long"] += 1  # its answer lies beyond max_seq_length
                continue
            out.append((ids, labels))
        return out

    train_tok, eval_tok = render_all(train_ex), render_all(eval_ex)
    if not train_tok:
        raise DatasetError(
            f"{data_cfg.path}: no example has an assistant answer within max_seq_length={data_cfg.max_seq_length}"
        )
    if data_cfg.packing:
        train_rows, eval_rows = (
            pack(train_tok, data_cfg.max_seq_length),
            pack(eval_tok, data_cfg.max_seq_length),
        )
    else:
        train_rows, eval_rows = [_row([e]) for e in train_tok], [_row([e]) for e in eval_tok]
    n_tokens = sum(len(r) for r in train_rows)
    stats.update(
        train_examples=len(train_tok),
        eval_examples=len(eval_tok),
        train_rows=len(train_rows),
        train_tokens=n_tokens,
        train_label_tokens=int(sum(int((r.labels != IGNORE_INDEX).sum()) for r in train_rows)),
        fill=round(n_tokens / (len(train_rows) * data_cfg.max_seq_length), 3) if data_cfg.packing else None,
    )
    return PreparedData(train_rows, eval_rows, "sha256:" + digest.hexdigest(), stats)
