"""One row per scenario: what load it ran, which faults and bad inputs it tried, what went wrong."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COLUMNS = ("scenario", "load", "faults injected", "bad inputs tried", "failures", "data lost", "result")


@dataclass
class Outcome:
    """The pass/fail figure of one scenario.

    ``failures`` counts requests or checks that broke a guarantee (a 5xx on bad input, a leak,
    a hang, a non-OpenAI error body...); ``data_lost`` counts records lost, duplicated or
    corrupted. A scenario passes when both are 0. ``problems`` lists the first few, readably.
    """

    scenario: str
    load: str = ""
    faults: int = 0
    bad_inputs: int = 0
    failures: int = 0
    data_lost: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""

    @property
    def passed(self) -> bool:
        return not self.skipped and self.failures == 0 and self.data_lost == 0

    def fail(self, problem: str, *, lost: int = 0) -> None:
        """Record one broken guarantee (``lost``: records it lost or duplicated)."""
        if lost:
            self.data_lost += lost
        else:
            self.failures += 1
        if len(self.problems) < 25:
            self.problems.append(problem)

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.fail(problem)
        return ok

    def row(self) -> tuple[Any, ...]:
        result = f"skipped: {self.skipped}" if self.skipped else ("PASS" if self.passed else "FAIL")
        return (self.scenario, self.load, self.faults, self.bad_inputs, self.failures, self.data_lost, result)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def assert_passed(outcome: Outcome) -> None:
    """For tests: fail with the scenario's problems listed."""
    assert outcome.passed, f"{outcome.scenario}: {outcome.failures} failures, {outcome.data_lost} lost\n" + (
        "\n".join(outcome.problems)
    )
