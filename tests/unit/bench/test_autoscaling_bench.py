"""The autoscaling bench's random-routing baseline, replayed on recorded requests (no Ray needed)."""

from __future__ import annotations

from bench.autoscaling import Record, Sample, replay_random


def _records(models: list[str], every_s: float = 1.0) -> list[Record]:
    return [Record(i, "t", m, "ramp", i * every_s, 1e9 + i * every_s) for i, m in enumerate(models)]


def _replicas(*running: tuple[float, int]) -> list[Sample]:
    return [Sample(t, n, 0, 0, 1, 1) for t, n in running]


def test_one_replica_with_room_for_one_adapter_loads_on_every_switch():
    records = _records(["a", "b"] * 10)
    assert replay_random(records, _replicas((0, 1)), capacity=1) == 1.0
    assert replay_random(records, _replicas((0, 1)), capacity=2) == 2 / 20  # each adapter once


def test_random_routing_over_two_replicas_loads_each_adapter_on_both():
    records = _records(["a", "b"] * 50)
    # Room for both adapters everywhere: at most one load per adapter per replica, then none.
    assert replay_random(records, _replicas((0, 2)), capacity=2) <= 4 / 100
    # Room for one: random routing keeps evicting (what multiplexed routing avoids).
    assert replay_random(records, _replicas((0, 2)), capacity=1) > 0.3


def test_only_the_window_is_counted_and_a_new_replica_starts_cold():
    records = _records(["a"] * 20)
    samples = _replicas((0, 1), (10, 2))  # a second, empty replica from t=10
    before = replay_random(records, samples, capacity=1, window=(0, 10))
    after = replay_random(records, samples, capacity=1, window=(10, 20))
    assert before == 1 / 10  # the first request only
    assert 0 < after <= 1 / 10  # the new replica loads "a" once, when random routing first picks it
