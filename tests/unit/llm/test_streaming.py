"""Streaming text for every script: byte-fallback (Phi-3 layout) and byte-level BPE tokenizers.

End to end through the engine, real Thai/CJK/emoji text is checked on the bundled model
(tests/integration/llm/test_bundled_streaming.py): a random tiny model emits arbitrary byte
tokens, and for invalid UTF-8 the byte-fallback decoder turns a whole run of byte tokens into
U+FFFD, so "the decoded text" of such output is not even prefix-stable.

The byte-fallback tokenizer is built offline with Phi-3's layout (tests/assets/byte_fallback.py):
every Thai, CJK and emoji character becomes one ``<0xNN>`` token per UTF-8 byte, so a prefix
decodes to one U+FFFD per pending byte.
"""

from __future__ import annotations

import pytest

from services.llm.streaming import IncrementalDetokenizer, TextStream

TEXTS = [
    " Hi€!",  # the issue's example: 3-byte euro sign after ASCII
    "สวัสดีครับ การไฟฟ้าส่วนภูมิภาค",  # Thai: 3 bytes per character, combining vowels
    "你好，世界。電力網の停電",  # CJK and Japanese, full-width punctuation
    "power 🙂👍🏽 family 👨‍👩‍👧 ok",  # 4-byte emoji, skin-tone modifier, ZWJ sequence
    "mixed: the grid ไฟดับ 停电 ⚡ restore",
]


@pytest.fixture(scope="module")
def byte_fallback():
    from tests.assets.byte_fallback import build_byte_fallback_tokenizer

    return build_byte_fallback_tokenizer()


@pytest.fixture(scope="module")
def byte_level(tiny_phi3):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_phi3)  # byte-level BPE (GPT-2 / SmolLM2 style)


def stream(tokenizer, ids, stop=()):
    s = TextStream(tokenizer, list(stop))
    deltas, stopped = [], False
    for token in ids:
        delta, stopped = s.push(token)
        deltas.append(delta)
        if stopped:
            break
    if not stopped:
        deltas.append(s.flush()[0])
    return deltas


@pytest.mark.parametrize("tok_name", ["byte_fallback", "byte_level"])
@pytest.mark.parametrize("text", TEXTS)
def test_streamed_text_equals_decoded_text_and_no_delta_splits_a_character(request, tok_name, text):
    tokenizer = request.getfixturevalue(tok_name)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tok_name == "byte_fallback":
        assert any(t.startswith("<0x") for t in tokenizer.convert_ids_to_tokens(ids))  # really byte tokens
    deltas = stream(tokenizer, ids)
    full = tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(deltas) == full
    assert not any("\ufffd" in d for d in deltas), deltas


def test_the_issue_example_streams_the_euro_sign_whole(byte_fallback):
    ids = byte_fallback(" Hi€!", add_special_tokens=False)["input_ids"]
    deltas = [d for d in stream(byte_fallback, ids) if d]
    assert "".join(deltas).endswith("Hi€!")
    assert any("€" in d for d in deltas)


def test_invalid_bytes_still_come_out_at_the_end(byte_fallback):
    """A generation that ends inside a character (or emits invalid bytes) loses nothing."""
    e2, x82 = byte_fallback.convert_tokens_to_ids(["<0xE2>", "<0x82>"])
    hi = byte_fallback("the", add_special_tokens=False)["input_ids"]
    ids = [*hi, e2, x82]
    deltas = stream(byte_fallback, ids)
    assert "".join(deltas) == byte_fallback.decode(ids, skip_special_tokens=True)


def test_special_tokens_are_left_out(byte_fallback):
    ids = [*byte_fallback("the grid", add_special_tokens=False)["input_ids"]]
    ids.insert(2, byte_fallback.convert_tokens_to_ids("<|end|>"))
    assert "".join(stream(byte_fallback, ids)) == byte_fallback.decode(ids, skip_special_tokens=True)


def test_stop_string_across_multibyte_tokens(byte_fallback):
    ids = byte_fallback("the grid 停电 restore power", add_special_tokens=False)["input_ids"]
    assert "".join(stream(byte_fallback, ids, stop=["停电"])).rstrip() == "the grid"
    assert "".join(stream(byte_fallback, ids, stop=["电 re", "zz"])) == "the grid 停"


def test_work_per_token_stays_bounded(byte_fallback):
    """O(total): each step decodes a short window, never the whole answer again."""
    ids = byte_fallback("the grid ไฟดับ 停电 🙂 " * 60, add_special_tokens=False)["input_ids"]

    class Counting:
        def __init__(self, inner):
            self.inner, self.decoded = inner, 0

        def decode(self, window, **kwargs):
            self.decoded += len(window)
            return self.inner.decode(window, **kwargs)

    counting = Counting(byte_fallback)
    d = IncrementalDetokenizer(counting)
    text = "".join(d.push(t) for t in ids) + d.flush()
    assert text == byte_fallback.decode(ids)
    assert counting.decoded <= 12 * len(ids)  # a re-decoding stream would be ~len(ids)**2 / 2


def test_first_generated_word_keeps_its_leading_space_after_the_prompt(byte_fallback):
    """SentencePiece decoders strip the first space of a decode: the prompt's tail is the context."""
    ids = byte_fallback("what is the grid", add_special_tokens=False)["input_ids"]
    word = byte_fallback.convert_ids_to_tokens(ids).index("▁grid")
    prompt, generated = ids[:word], ids[word:]
    assert byte_fallback.decode(generated) == "grid"  # what decoding alone gives: "isgrid" when appended
    s = TextStream(byte_fallback, [], prompt_ids=prompt)
    text = "".join(s.push(t)[0] for t in generated) + s.flush()[0]
    assert text == " grid"
    assert byte_fallback.decode(prompt) + text == byte_fallback.decode(ids)


@pytest.mark.parametrize("text", TEXTS)
def test_with_a_prompt_context_the_stream_is_what_the_prompt_and_answer_decode_to(byte_fallback, text):
    prompt = byte_fallback("the crew", add_special_tokens=False)["input_ids"]
    ids = byte_fallback(text, add_special_tokens=False)["input_ids"]
    s = TextStream(byte_fallback, [], prompt_ids=prompt)
    deltas = [s.push(t)[0] for t in ids] + [s.flush()[0]]
    assert byte_fallback.decode(prompt) + "".join(deltas) == byte_fallback.decode(prompt + ids)
    assert not any("\ufffd" in d for d in deltas)


@pytest.mark.parametrize("tok_name", ["byte_fallback", "byte_level"])
def test_a_tokens_own_text_keeps_its_leading_space(request, tok_name):
    """Logprobs name each token by its text: ``▁grid`` is " grid" (decoded alone it is "grid")."""
    from services.llm.streaming import token_text_of

    tokenizer = request.getfixturevalue(tok_name)
    text = tokenizer.decode(tokenizer("the grid outage", add_special_tokens=False)["input_ids"])
    ids = tokenizer(" the grid outage", add_special_tokens=False)["input_ids"]
    piece = token_text_of(tokenizer)
    assert [piece(t) for t in ids][1].startswith(" ")
    assert "".join(piece(t) for t in ids).strip() == text.strip()
    assert piece(tokenizer.eos_token_id) == tokenizer.eos_token  # special tokens read as themselves
