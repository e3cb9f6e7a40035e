"""Vectorized sampling on the model's device: greedy, temperature, top-p, seeded rows, non-finite rows."""

from __future__ import annotations

import torch

from services.llm.sampling import make_generator, sample_batch


def logits(rows: int, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(rows, vocab) * 3


def test_greedy_rows_take_the_argmax_and_tiny_top_p_does_too():
    x = logits(4)
    gens = [make_generator(i) for i in range(4)]
    tokens, finite = sample_batch(x, [0.0, 0.0, 1.0, 0.7], [1.0, 1.0, 1e-6, 1e-6], gens)
    assert tokens == x.argmax(-1).tolist() and finite == [True] * 4


def test_a_seeded_row_samples_the_same_tokens_in_any_batch():
    x = logits(6, seed=1)
    alone = [sample_batch(x[2:3], [0.9], [0.95], [make_generator(42)])[0][0] for _ in range(3)]
    mixed = []
    for _ in range(3):
        gens = [make_generator(s) for s in (1, 2, 42, 3, 4, 5)]
        mixed.append(sample_batch(x, [0.0, 1.0, 0.9, 0.5, 0.0, 1.3], [1, 0.8, 0.95, 1, 1, 0.5], gens)[0][2])
    assert alone == mixed  # same seed, same draws, whatever else shares the batch


def test_sampling_follows_the_distribution():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(4000, 1)
    gens = [make_generator(i) for i in range(4000)]
    tokens, _ = sample_batch(x, [1.0] * 4000, [1.0] * 4000, gens)
    freq = torch.bincount(torch.tensor(tokens), minlength=4).float() / 4000
    assert torch.allclose(freq, torch.softmax(x[0], -1), atol=0.03)
    top, _ = sample_batch(x[:500], [1.0] * 500, [0.7] * 500, gens[:500])
    assert set(top) <= {2, 3}  # 3 (64 %) and 2 (24 %) reach 0.7; 1 and 0 are cut


def test_non_finite_rows_are_reported_not_sampled_into_the_rest():
    x = logits(3)
    x[1, 5] = float("nan")
    tokens, finite = sample_batch(x, [0.0, 1.0, 1.0], [1.0] * 3, [make_generator(i) for i in range(3)])
    assert finite == [True, False, True] and tokens[0] == int(x[0].argmax())


def test_penalties_and_logit_bias_change_the_logits_as_openai_defines():
    import torch

    from services.llm.sampling import adjust_logits

    logits = torch.zeros(3, 6)
    out = adjust_logits(
        logits, [[1, 1, 2], [1], []], [0.5, 0.0, 0.0], [0.25, 0.0, 0.0], [None, None, {4: -100.0, 5: 3.0}]
    )
    assert out[0].tolist() == [0.0, -1.0, -0.75, 0.0, 0.0, 0.0]  # 0.5 + 2 x 0.25, then 0.5 + 0.25
    assert out[1].tolist() == [0.0] * 6  # nothing asked: untouched
    assert out[2].tolist() == [0.0, 0.0, 0.0, 0.0, -100.0, 3.0]
    assert adjust_logits(logits, [[1]], [0.0], [0.0], [None]) is logits


def test_engine_honours_logit_bias_and_frequency_penalty(make_engine):
    from tests.unit.llm.conftest import chat, collect, run

    engine = make_engine()
    forced = engine.prompts.encode(" grid")[0]
    text, _, _ = run(
        collect(engine, chat("the grid", max_tokens=4, ignore_eos=True, logit_bias={forced: 100.0}))
    )
    assert text == engine.tokenizer.decode([forced] * 4)
    repeated = run(
        collect(
            engine,
            chat("the grid", max_tokens=6, ignore_eos=True, logit_bias={forced: 5.0}, frequency_penalty=2.0),
        )
    )
    assert repeated[0] != text  # the penalty breaks the loop the bias alone would make
