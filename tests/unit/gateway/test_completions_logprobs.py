"""``/v1/completions`` ``logprobs`` (the legacy integer form) and ``echo`` through the official ``openai`` client.

The gateway's real app over the logic-layer stand-in LLM (``EchoLLM``: one word per token, each
token's log-probability -0.5); the engines' own log-probabilities are tested in tests/unit/llm.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.unit.console.conftest import BASE, platform  # noqa: F401  (the gateway's app with real stores)


@pytest.fixture
def oai(platform):  # noqa: F811  (the fixture imported above)
    transport = httpx.ASGITransport(app=platform["app"])
    return openai.AsyncOpenAI(
        base_url="http://adept.test/v1",
        api_key=platform["acme"],
        http_client=httpx.AsyncClient(transport=transport, base_url="http://adept.test"),
        max_retries=0,
    )


async def test_logprobs_in_a_completion(oai):
    out = await oai.completions.create(model=BASE, prompt="one two", max_tokens=8, logprobs=1)
    choice = out.choices[0]
    assert choice.text == "base: one two "
    lp = choice.logprobs
    assert lp.tokens == ["base: ", "one ", "two "]
    assert lp.token_logprobs == [-0.5, -0.5, -0.5]
    assert lp.top_logprobs == [{"base: ": -0.5}, {"one ": -0.5}, {"two ": -0.5}]
    assert lp.text_offset == [0, 6, 10]  # where each token starts in `text`
    plain = await oai.completions.create(model=BASE, prompt="one two", max_tokens=8)
    assert plain.choices[0].logprobs is None


async def test_logprobs_zero_gives_only_the_sampled_tokens(oai):
    out = await oai.completions.create(model=BASE, prompt="x", max_tokens=8, logprobs=0)
    assert out.choices[0].logprobs.tokens == ["base: ", "x "]
    assert out.choices[0].logprobs.top_logprobs == [{"base: ": -0.5}, {"x ": -0.5}]  # as OpenAI and vLLM


async def test_logprobs_in_a_stream_continue_the_offsets(oai):
    stream = await oai.completions.create(
        model=BASE, prompt="one two", max_tokens=8, logprobs=1, stream=True, n=2
    )
    by_choice: dict[int, list] = {0: [], 1: []}
    async for event in stream:
        for c in event.choices:
            if c.logprobs is not None:
                by_choice[c.index].append(c.logprobs)
    for parts in by_choice.values():
        assert [t for p in parts for t in p.tokens] == ["base: ", "one ", "two "]
        assert [o for p in parts for o in p.text_offset] == [0, 6, 10]


async def test_echo_puts_the_prompt_first(oai):
    out = await oai.completions.create(model=BASE, prompt="one two", max_tokens=8, echo=True)
    assert out.choices[0].text == "one two" + "base: one two "
    stream = await oai.completions.create(model=BASE, prompt="one two", max_tokens=8, echo=True, stream=True)
    text = "".join([c.text async for e in stream for c in e.choices])
    assert text == "one two" + "base: one two "


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": 6}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"echo": True, "logprobs": 1}, None),
        ({"suffix": "end"}, None),
    ],
)
async def test_unsupported_or_out_of_range_is_a_400(oai, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        await oai.completions.create(model=BASE, prompt="x", max_tokens=2, **extra)
    assert err.value.status_code == 400
    if param:
        assert err.value.body["param"] == param


async def test_chat_style_boolean_logprobs_is_a_400(oai):
    with pytest.raises(openai.BadRequestError):
        await oai.completions.create(model=BASE, prompt="x", max_tokens=2, extra_body={"logprobs": True})
