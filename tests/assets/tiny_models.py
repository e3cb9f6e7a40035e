"""Tiny, real, randomly initialised models for fast tests (no hub access needed).

``make_tiny_phi3`` builds a 2-layer Phi-3 with a small byte-level BPE tokenizer trained on
the spot and a Phi-3-style chat template, saved as a normal transformers directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_PHI3_ID = "tiny-random-phi3"
TINY_VERSION = "1"  # bump when the recipe changes so caches rebuild

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

_WORDS = [
    "the",
    "a",
    "grid",
    "outage",
    "crew",
    "line",
    "transformer",
    "safety",
    "meter",
    "tariff",
    "rate",
    "customer",
    "power",
    "voltage",
    "substation",
    "feeder",
    "breaker",
    "fault",
    "code",
    "repair",
    "restore",
    "inspect",
    "report",
    "ticket",
    "hour",
    "day",
    "week",
    "kilowatt",
    "price",
    "answer",
    "question",
    "document",
    "policy",
    "procedure",
    "step",
    "check",
    "wear",
    "glove",
    "lock",
    "tag",
    "ground",
    "wire",
    "pole",
    "tree",
    "trim",
    "storm",
    "what",
    "is",
    "how",
    "when",
    "why",
    "where",
    "which",
    "who",
    "does",
    "do",
    "can",
    "should",
    "must",
    "will",
    "may",
    "one",
    "two",
    "three",
    "four",
    "five",
    "ten",
]


def _training_text() -> list[str]:
    import random

    rng = random.Random(0)
    lines = []
    for _ in range(2000):
        n = rng.randint(4, 16)
        lines.append(
            " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + rng.choice([".", "?", "!"])
        )
    return lines


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[2:],
    )
    fast.chat_template = PHI3_CHAT_TEMPLATE
    return fast


def make_tiny_phi3(dest: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Phi-3 (hidden 64, 2 layers, ~0.2 M params) and its tokenizer to ``dest``."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    tokenizer = _build_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=eos,
        eos_token_id=[eos, end],
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config)
    model.generation_config.eos_token_id = [eos, end]
    model.generation_config.pad_token_id = eos
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    (dest / "adept_model.json").write_text(json.dumps({"id": TINY_PHI3_ID}))
    return dest


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_tiny_phi3(cache_root: Path) -> Path:
    """``make_tiny_phi3`` once per cache dir, safe when several test processes ask at once."""
    dest = Path(cache_root) / f"tiny-phi3-v{TINY_VERSION}"
    if (dest / "adept_model.json").is_file():
        return dest
    with _lock(Path(cache_root) / ".tiny-phi3.lock"):
        if not (dest / "adept_model.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=".tiny-phi3-", dir=cache_root))
            try:
                make_tiny_phi3(tmp)
                if dest.exists():
                    shutil.rmtree(dest)
                os.rename(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return dest
