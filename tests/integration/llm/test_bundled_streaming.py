"""Thai, CJK and emoji stream intact on the bundled SmolLM2 (byte-level BPE): chunks == decoded generation.

The prompts make the model repeat multi-byte text, so its answers really contain characters that
span several tokens. The reference is transformers' own ``generate`` + ``decode`` of the same
prompt (greedy, fp32), computed without the engine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.llm.protocol import GenerateRequest

pytestmark = pytest.mark.integration

CASES = [
    ("A: สวัสดีครับ\nB: สวัสดีครับ\nA: สวัสดีครับ\nB:", "\u0e01", "\u0e7f"),  # Thai block
    ("1. 你好世界\n2. 你好世界\n3. 你好世界\n4.", "\u4e00", "\u9fff"),  # CJK ideographs
    ("Emoji: 🙂👍🎉\nEmoji: 🙂👍🎉\nEmoji: 🙂👍🎉\nEmoji:", "\U0001f300", "\U0001faff"),  # emoji
]


def test_multibyte_text_streams_whole_and_equals_the_decoded_generation(bundled_model: Path):
    import torch

    from adept.models import load_causal_lm, load_tokenizer
    from services.llm.engine import Engine

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(bundled_model)
    model = load_causal_lm(bundled_model, device="cpu", dtype="float32")
    engine = Engine(model, tokenizer, batch_wait_ms=0, max_tokens_limit=64)

    async def stream_all():
        async def one(prompt):
            req = GenerateRequest(prompt=prompt, max_tokens=20, temperature=0, ignore_eos=True)
            return [c.text async for c in engine.generate(req, "")]

        return await asyncio.gather(*(one(p) for p, _, _ in CASES))  # batched together, too

    try:
        streamed = asyncio.run(stream_all())
    finally:
        asyncio.run(engine.close())
    for (prompt, lo, hi), chunks in zip(CASES, streamed, strict=True):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=20, min_new_tokens=20, do_sample=False)
        expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert "".join(chunks) == expected
        assert any(lo <= ch <= hi for ch in expected), expected  # the case really is multi-byte
        assert not any("\ufffd" in c for c in chunks[:-1]), chunks  # no chunk splits a character
