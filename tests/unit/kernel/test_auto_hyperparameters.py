"""``"auto"`` hyper-parameters scale with the dataset: a few dozen examples get enough, and large enough, steps."""

from __future__ import annotations

import math

import pytest

from adept.config.finetuning import MAX_EXAMPLES_SEEN, MIN_STEPS, auto_hyperparameters


@pytest.mark.parametrize("n", [1, 5, 12, 48, 100, 236, 999, 1000, 5000, 100_000])
def test_every_size_gets_at_least_min_steps_or_the_epoch_cap(n):
    hp = auto_hyperparameters(n)
    steps = math.ceil(n / hp.batch_size) * hp.n_epochs
    assert 1 <= hp.batch_size <= 8 and hp.n_epochs >= 1
    assert steps >= MIN_STEPS or hp.n_epochs == 25
    assert n * hp.n_epochs <= max(MAX_EXAMPLES_SEEN, n)


def test_small_sets_take_more_and_larger_steps_than_the_old_default():
    few = auto_hyperparameters(48)
    assert (few.n_epochs, few.batch_size, few.learning_rate_multiplier, few.packing) == (3, 2, 5.0, False)
    demo = auto_hyperparameters(236)
    assert demo.batch_size == 8 and demo.learning_rate_multiplier == 2.5 and demo.n_epochs == 3
    big = auto_hyperparameters(100_000)
    assert big.n_epochs == 1 and big.learning_rate_multiplier == 1.0 and big.packing


def test_limits_are_respected_and_bad_sizes_refused():
    assert auto_hyperparameters(5, max_n_epochs=4).n_epochs == 4
    assert auto_hyperparameters(500, max_batch_size=2).batch_size == 2
    with pytest.raises(ValueError, match="positive"):
        auto_hyperparameters(0)


def test_it_is_a_pure_function():
    assert auto_hyperparameters(48) == auto_hyperparameters(48)


def test_default_n_epochs_is_deprecated_with_a_warning_and_refuses_nothing(caplog) -> None:
    """Deprecated, not wired: "auto" follows the dataset's size, which a platform-wide fixed default would
    override for every job. A config that still sets it loads (even above max_n_epochs) and is told so."""
    import logging

    from adept.config.finetuning import FineTuningConfig

    with caplog.at_level(logging.WARNING, logger="adept.config.finetuning"):
        FineTuningConfig()
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="adept.config.finetuning"):
        cfg = FineTuningConfig(default_n_epochs=100, max_n_epochs=10)
    assert cfg.max_n_epochs == 10
    (record,) = caplog.records
    assert "finetuning.default_n_epochs (100) is deprecated and ignored" in record.getMessage()
