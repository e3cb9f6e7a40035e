"""A tiny tokenizer with Phi-3's (and Llama 2's) layout, built offline: sentencepiece-style BPE with byte fallback.

Phi-3's ``tokenizer.json`` has no pre-tokenizer; its normalizer prepends ``▁`` and turns spaces into
``▁``; its model is BPE with ``byte_fallback`` and the 256 tokens ``<0x00>`` .. ``<0xFF>`` right
after ``<unk>``, ``<s>``, ``</s>``; its decoder is ``Replace(▁ → " "), ByteFallback, Fuse, Strip``.
Any character outside the learned vocabulary (Thai, CJK, emoji here) becomes one ``<0xNN>`` token
per UTF-8 byte, and decoding a prefix that ends inside a character yields one U+FFFD per pending
byte: what an incremental detokenizer must hold back.
"""

from __future__ import annotations

import json

BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
# Words the BPE learns (ASCII only, so every non-ASCII character falls back to bytes).
_CORPUS_WORDS = [
    *("the", "grid", "outage", "crew", "line", "transformer", "safety", "meter", "tariff", "rate"),
    *("customer", "power", "voltage", "breaker", "fault", "code", "repair", "restore", "inspect"),
    *("report", "storm", "what", "is", "how", "when", "why", "where", "who"),
]


def build_byte_fallback_tokenizer():
    """A ``PreTrainedTokenizerFast`` with Phi-3's byte-fallback layout and special tokens (no hub access)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.assets.tiny_models import PHI3_CHAT_TEMPLATE

    # 1. Learn merges over ▁-joined words (a Metaspace split only for training).
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    ascii_alphabet = [chr(c) for c in range(32, 127)] + ["▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=ascii_alphabet,
        limit_alphabet=len(ascii_alphabet),
        show_progress=False,
    )
    lines = [" ".join(_CORPUS_WORDS[i:] + _CORPUS_WORDS[:i]) for i in range(len(_CORPUS_WORDS))]
    trainer_tok.train_from_iterator(lines * 20, trainer=trainer)
    learned = json.loads(trainer_tok.to_str())["model"]

    # 2. Phi-3's vocabulary order: <unk>, <s>, </s>, the 256 byte tokens, then the learned pieces.
    vocab: dict[str, int] = {}
    for piece in ["<unk>", "<s>", "</s>", *BYTE_TOKENS]:
        vocab[piece] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    spec = json.loads(Tokenizer(models.BPE()).to_str())
    spec["normalizer"] = json.loads(trainer_tok.normalizer.__getstate__())
    spec["pre_tokenizer"] = None
    spec["decoder"] = json.loads(
        decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        ).__getstate__()
    )
    spec["model"] = {
        **learned,
        "vocab": vocab,
        "unk_token": "<unk>",
        "byte_fallback": True,
        "fuse_unk": True,
        "ignore_merges": False,
    }
    tok = Tokenizer.from_str(json.dumps(spec))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = PHI3_CHAT_TEMPLATE
    return fast
