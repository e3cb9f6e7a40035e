"""Data preparation: formats, assistant-only labels, packing without leakage, bad files named by line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from training.data import (
    IGNORE_INDEX,
    DatasetError,
    collate,
    epoch_order,
    pack,
    parse_example,
    prepare,
    read_examples,
    render_example,
)

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "what is a feeder"},
        {"role": "assistant", "content": "a line from the substation"},
        {"role": "user", "content": "why trim trees"},
        {"role": "assistant", "content": "to stop faults"},
    ]
}


@pytest.fixture(scope="module")
def tok(tiny_phi3: Path):
    from adept.models import load_tokenizer

    return load_tokenizer(tiny_phi3)


def _write(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _data_cfg(path: Path, **kw) -> SimpleNamespace:
    base = dict(
        path=str(path),
        format="auto",
        validation_path=None,
        validation_split=0.0,
        max_seq_length=128,
        packing=True,
        skip_invalid=False,
    )
    return SimpleNamespace(**{**base, **kw})


def _trained_text(tok, ids: list[int], labels: list[int]) -> str:
    return tok.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])


def test_loss_only_on_assistant_turns(tok) -> None:
    ids, labels, truncated = render_example(tok, parse_example(CHAT), 512)
    assert not truncated
    # Both answers with their end-of-turn tokens (and the final EOS), nothing of system or user.
    assert (
        _trained_text(tok, ids, labels)
        == "a line from the substation<|end|>\nto stop faults<|end|>\n<|endoftext|>"
    )
    full = tok.decode(ids)
    assert full == tok.apply_chat_template(CHAT["messages"], tokenize=False)


def test_weight_zero_assistant_turn_is_context_only(tok) -> None:
    chat = json.loads(json.dumps(CHAT))
    chat["messages"][2]["weight"] = 0
    ids, labels, _ = render_example(tok, parse_example(chat), 512)
    assert "substation" not in _trained_text(tok, ids, labels)
    assert "to stop faults" in _trained_text(tok, ids, labels)


@pytest.mark.parametrize(
    "line",
    [
        {"conversations": [{"from": "human", "value": "q?"}, {"from": "gpt", "value": "the answer"}]},
        {"prompt": "q?", "completion": "the answer"},
        {"messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "the answer"}]},
    ],
    ids=["sharegpt", "prompt_completion", "chat"],
)
def test_three_formats_render_the_same(tok, line: dict) -> None:
    ids, labels, _ = render_example(tok, parse_example(line), 512)
    assert tok.decode(ids) == "<|user|>\nq?<|end|>\n<|assistant|>\nthe answer<|end|>\n<|endoftext|>"
    assert _trained_text(tok, ids, labels).startswith("the answer<|end|>")


def test_malformed_lines_are_named_by_file_and_line(tmp_path: Path) -> None:
    bad = _write(
        tmp_path / "bad.jsonl",
        [
            CHAT,
            "{not json",
            {"messages": [{"role": "user", "content": "only a question"}]},
            "",
            {"text": "no known field"},
            {"messages": [{"role": "wizard", "content": "x"}]},
            [1, 2],
        ],
    )
    with pytest.raises(DatasetError) as err:
        read_examples(str(bad))
    problems = err.value.problems
    assert [p.split(":")[1] for p in problems] == ["2", "3", "5", "6", "7"]
    assert all(p.startswith(f"{bad}:") for p in problems)
    assert "not valid JSON" in problems[0] and "no assistant message" in problems[1]
    assert "unsupported role 'wizard'" in problems[3]
    assert f"{bad}:2" in err.value.message and err.value.status == 400


def test_a_line_that_is_not_utf8_spoils_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(CHAT).encode()
    path.write_bytes(
        good + b"\n" + '{"prompt": "café", "completion": "x"}'.encode("latin-1") + b"\n" + good + b"\n"
    )
    examples, problems, raw = read_examples(str(path), skip_invalid=True)
    assert len(examples) == 2 and raw == path.read_bytes()
    assert problems == [f"{path}:2: not UTF-8 text (byte 0xe9 at column 16)"]


def test_an_fsspec_uri_is_read_like_a_file() -> None:
    import fsspec

    with fsspec.open("memory://adept-train/data.jsonl", "w") as f:
        f.write(json.dumps(CHAT) + "\n{oops\n")
    with pytest.raises(DatasetError) as err:
        read_examples("memory://adept-train/data.jsonl")
    assert err.value.problems == [
        "memory://adept-train/data.jsonl:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    ]


def test_skip_invalid_keeps_the_good_lines_but_never_an_all_invalid_file(tmp_path: Path) -> None:
    mixed = _write(tmp_path / "mixed.jsonl", [CHAT, "{oops"])
    examples, problems, _ = read_examples(str(mixed), skip_invalid=True)
    assert len(examples) == 1 and len(problems) == 1
    junk = _write(tmp_path / "junk.jsonl", ["{oops", "[]"])
    with pytest.raises(DatasetError, match="all lines are invalid"):
        read_examples(str(junk), skip_invalid=True)


def test_empty_and_missing_files_fail_fast(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no examples"):
        read_examples(str(empty))
    with pytest.raises(DatasetError, match="not found"):
        read_examples(str(tmp_path / "missing.jsonl"))


def test_answer_beyond_max_seq_length_is_dropped(tok, tmp_path: Path) -> None:
    long_prompt = {"prompt": "word " * 200, "completion": "ok"}
    path = _write(tmp_path / "long.jsonl", [long_prompt])
    with pytest.raises(DatasetError, match="max_seq_length=32"):
        prepare(_data_cfg(path, max_seq_length=32), tok, seed=0)


def test_packing_restarts_positions_and_masks_boundaries() -> None:
    a = ([1, 2, 3], [IGNORE_INDEX, 2, 3])
    b = ([4, 5], [4, 5])
    c = ([6, 7, 8, 9], [IGNORE_INDEX, IGNORE_INDEX, 8, 9])
    rows = pack([a, b, c], max_seq_length=6)
    assert [r.input_ids.tolist() for r in rows] == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert rows[0].position_ids.tolist() == [0, 1, 2, 0, 1]
    # The first token of b may not be predicted from a's last token.
    assert rows[0].labels.tolist() == [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]
    batch = collate(rows, pad_id=0, packed=True)
    assert "attention_mask" not in batch
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 3, 0]  # padding is a segment of its own
    assert batch["labels"][1, -1].item() == IGNORE_INDEX and batch["num_tokens"] == 9
    unpacked = collate(rows, pad_id=0, packed=False)
    assert unpacked["attention_mask"][1].tolist() == [1, 1, 1, 1, 0] and "position_ids" not in unpacked


def _tiny_llama(tiny_phi3: Path, tmp_path: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from adept.models import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(tiny_phi3)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


@pytest.mark.parametrize("arch", ["phi3", "llama"])
def test_packed_examples_do_not_attend_to_each_other(tok, tiny_phi3: Path, tmp_path: Path, arch: str) -> None:
    """Logits of an example packed after another equal its logits alone (sdpa and eager kernels)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = tiny_phi3 if arch == "phi3" else _tiny_llama(tiny_phi3, tmp_path)
    examples = [
        render_example(tok, parse_example(x), 128)[:2]
        for x in (CHAT, {"prompt": "q?", "completion": "answer"})
    ]
    (row,) = pack(examples, max_seq_length=256)
    batch = collate([row], pad_id=0, packed=True)
    n0 = len(examples[0][0])
    for impl in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, attn_implementation=impl
        ).eval()
        with torch.no_grad():
            # use_cache=False matters: with a KV cache transformers skips packed-sequence detection.
            packed = model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).logits[0]
            alone = model(input_ids=torch.tensor([examples[1][0]]), use_cache=False).logits[0]
            leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[
                0
            ]  # causal over the whole row
        torch.testing.assert_close(packed[n0:], alone, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(leaky[n0:], alone, atol=1e-3), "the check must be able to see leakage"


def test_prepare_is_deterministic_and_splits(tok, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.jsonl", [{"prompt": f"question {i}?", "completion": f"answer {i}"} for i in range(20)]
    )
    cfg = _data_cfg(path, validation_split=0.2)
    a, b = prepare(cfg, tok, seed=3), prepare(cfg, tok, seed=3)
    assert a.dataset_hash == b.dataset_hash and a.dataset_hash.startswith("sha256:")
    assert [r.input_ids.tolist() for r in a.train] == [r.input_ids.tolist() for r in b.train]
    assert a.stats["train_examples"] == 16 and a.stats["eval_examples"] == 4
    assert a.stats["train_rows"] < 16 and a.stats["fill"] > 0.5  # packed
    c = prepare(cfg, tok, seed=4)
    assert [r.input_ids.tolist() for r in c.train] != [r.input_ids.tolist() for r in a.train]
    assert np.all(np.concatenate([r.labels for r in a.train]) >= IGNORE_INDEX)


def test_epoch_order_is_a_seeded_permutation() -> None:
    assert epoch_order(10, 0, 1) == epoch_order(10, 0, 1)
    assert sorted(epoch_order(10, 1, 1)) == list(range(10))
    assert epoch_order(10, 0, 1) != epoch_order(10, 1, 1)
