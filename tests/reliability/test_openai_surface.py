"""The official ``openai`` client against the in-process platform (real engine, real embedding model).

Embeddings from token arrays of the embedding model's own tokenizer, ``/v1/completions`` logprobs
from the real engine, ``n``, and ``logit_bias`` / penalties honoured, not silently ignored.
"""

from __future__ import annotations

import numpy as np
import openai
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def oai(platform, tenants):
    return openai.OpenAI(base_url=f"{platform.url}/v1", api_key=tenants[0].key, max_retries=0, timeout=120)


def vectors(resp) -> np.ndarray:
    return np.asarray([d.embedding for d in resp.data], dtype=np.float32)


def test_token_arrays_embed_like_their_text(oai, embedder):
    texts = ["the grid outage", "restore power after the storm"]
    tok = embedder.tokenizer
    bare = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    framed = [tok(t)["input_ids"] for t in texts]
    by_text = vectors(oai.embeddings.create(model="embedding", input=texts))
    by_ids = oai.embeddings.create(model="embedding", input=bare)
    assert np.abs(vectors(by_ids) - by_text).max() < 1e-5
    assert by_ids.usage.prompt_tokens == sum(len(ids) for ids in bare)  # counted exactly
    assert np.abs(vectors(oai.embeddings.create(model="embedding", input=framed)) - by_text).max() < 1e-5
    one = oai.embeddings.create(model="embedding", input=bare[0])  # one array, not a list of them
    assert np.abs(vectors(one)[0] - by_text[0]).max() < 1e-5


@pytest.mark.parametrize(
    ("ids", "says"),
    [
        ([[101, 30522]], "outside this model's vocabulary"),
        ([[2000] * 255], "more than this model's limit of 254"),
        ([[1, 2], []], "is empty"),
        ([[5, -3]], "-3"),
    ],
)
def test_bad_token_arrays_are_400s_on_input(oai, ids, says):
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model="embedding", input=ids)
    assert says in err.value.body["message"] and err.value.body["param"] == "input"


def test_completion_logprobs_from_the_engine(oai, tenants):
    out = oai.completions.create(
        model=tenants[0].adapters[0], prompt="the grid", max_tokens=6, temperature=0, logprobs=3
    )
    choice = out.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == out.usage.completion_tokens
    assert all(
        len(top) <= 4 and lp.tokens[i] in top and max(top.values()) >= value
        for i, (top, value) in enumerate(zip(lp.top_logprobs, lp.token_logprobs, strict=True))
    )
    offsets = [0]
    for token in lp.tokens[:-1]:
        offsets.append(offsets[-1] + len(token))
    assert lp.text_offset == offsets
    if "\ufffd" not in "".join(lp.tokens):
        assert "".join(lp.tokens) == choice.text
    streamed = oai.completions.create(
        model=tenants[0].adapters[0], prompt="the grid", max_tokens=6, temperature=0, logprobs=3, stream=True
    )
    tokens = [t for event in streamed for c in event.choices if c.logprobs for t in c.logprobs.tokens]
    assert tokens == lp.tokens  # greedy: the same tokens streamed


def test_n_choices_and_the_limit(oai, platform):
    out = oai.completions.create(
        model=platform.ctx.catalog.base_model_id, prompt="the grid", max_tokens=3, n=2
    )
    assert [c.index for c in out.choices] == [0, 1]
    with pytest.raises(openai.BadRequestError) as err:
        oai.completions.create(model=platform.ctx.catalog.base_model_id, prompt="x", max_tokens=2, n=5)
    assert err.value.body["param"] == "n"


def test_logit_bias_forces_and_bans_tokens(oai, platform):
    base = platform.ctx.catalog.base_model_id
    tok = platform.engine.tokenizer
    grid = tok(" grid", add_special_tokens=False)["input_ids"][-1]

    def tokens(**kw) -> list[str]:
        out = oai.completions.create(model=base, prompt="the", max_tokens=4, temperature=0, logprobs=0, **kw)
        return out.choices[0].logprobs.tokens

    forced = tokens(logit_bias={str(grid): 100})
    assert len(set(forced)) == 1 and len(forced) == 4  # every step the forced token
    free = tokens()
    banned = tokens(logit_bias={str(tok.convert_tokens_to_ids(tok.tokenize(free[0]))[0]): -100})
    assert banned[0] != free[0]
    with pytest.raises(openai.BadRequestError) as err:
        tokens(logit_bias={str(len(tok) + 10): 5})
    assert err.value.body["param"] == "logit_bias"


def test_penalties_stop_a_biased_token_repeating(oai, platform):
    """A mild bias makes greedy decoding repeat " grid"; presence and frequency penalties stop the repeats."""
    base = platform.ctx.catalog.base_model_id
    tok = platform.engine.tokenizer
    grid = str(tok(" grid", add_special_tokens=False)["input_ids"][-1])

    def tokens(**kw) -> list[str]:
        out = oai.completions.create(
            model=base, prompt="the", max_tokens=8, temperature=0, logprobs=0, logit_bias={grid: 4}, **kw
        )
        return out.choices[0].logprobs.tokens

    assert tokens() == [" grid"] * 8
    assert tokens(presence_penalty=2.0, frequency_penalty=2.0).count(" grid") == 1
    assert tokens(frequency_penalty=2.0).count(" grid") < 8
