"""What a fine-tuning run's log says: its steps and losses, resumes, result and error.

``python -m training.finetune`` writes one line per reported step
(``[adept.train] step 3/12 train_loss 2.1234 eval_loss 2.0 lr 1.00e-04 tokens 1234``), a line
when it resumes from a checkpoint, and ends with one JSON line: the summary
(``{"adapter": "acme/x@v1", "steps": 12, "tokens_seen": ...}``) or the error
(``{"error": {"code", "message", "param"}}``). The embedded runner reads its processes' logs
with ``parse_training_log``; the operator reads Ray job logs with it. Ray prefixes worker
lines (``(RayTrainWorker pid=1) ``), so lines are searched, not matched from their start.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_STEP = re.compile(r"\bstep[\"']?\s*[=:]?\s*(\d+)(?:\s*/\s*(\d+))?")
# `\b` keeps `eval_loss` out: `_` is a word character, so there is no boundary before its `loss`.
_LOSS = re.compile(r"\b(?:train_)?loss[\"']?\s*[=:]?\s*" + _NUMBER)
_EVAL_LOSS = re.compile(r"\beval_loss[\"']?\s*[=:]?\s*" + _NUMBER)
_TOKENS = re.compile(r"\btokens\s+(\d+)")
_RESUMED = re.compile(r"\bresumed from checkpoint at step (\d+)")
_VERSION = re.compile(r"\b(?:published|version)\b[^\n]*?\b([a-z0-9][-a-z0-9]*)/([a-z0-9][-a-z0-9_.]*)@(v\d+)")
_JSON = re.compile(r"(\{.*\})\s*$")


@dataclass
class LoggedStep:
    """One reported optimizer step."""

    step: int
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    tokens: int | None = None


@dataclass
class TrainingLog:
    """Everything ``parse_training_log`` found, in log order."""

    steps: list[LoggedStep] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    adapter_id: str | None = None

    @property
    def last(self) -> LoggedStep | None:
        return self.steps[-1] if self.steps else None

    @property
    def adapter_version(self) -> str | None:
        return self.adapter_id.rsplit("@", 1)[1] if self.adapter_id and "@" in self.adapter_id else None


def _float(text: str) -> float:
    return float(text)


def parse_training_log(text: str) -> TrainingLog:
    """Steps, resumes, the published adapter, the summary and the error in a run's log text.

    A re-reported step (a resumed run repeats the steps after its checkpoint) replaces the
    earlier report of that step, so ``steps`` holds each step once, in order.
    """
    out = TrainingLog()
    by_step: dict[int, LoggedStep] = {}
    for line in text.splitlines():
        m = _JSON.search(line)
        if m:
            try:
                record = json.loads(m.group(1))
            except ValueError:
                record = None
            if isinstance(record, dict):
                _json_line(record, out, by_step)
                continue
        if r := _RESUMED.search(line):
            out.resumed_from.append(int(r.group(1)))
            continue
        s, loss = _STEP.search(line), _LOSS.search(line)
        if s and loss:
            ev, tok = _EVAL_LOSS.search(line), _TOKENS.search(line)
            step = LoggedStep(
                step=int(s.group(1)),
                total_steps=int(s.group(2)) if s.group(2) else None,
                train_loss=_float(loss.group(1)),
                valid_loss=_float(ev.group(1)) if ev else None,
                tokens=int(tok.group(1)) if tok else None,
            )
            by_step[step.step] = step
        if v := _VERSION.search(line):
            out.adapter_id = f"{v.group(1)}/{v.group(2)}@{v.group(3)}"
    out.steps = [by_step[k] for k in sorted(by_step)]
    return out


def _json_line(record: dict[str, Any], out: TrainingLog, by_step: dict[int, LoggedStep]) -> None:
    err = record.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        out.error = {
            "code": str(err.get("code") or "training_failed"),
            "message": err["message"],
            "param": err.get("param") if isinstance(err.get("param"), str) else None,
        }
        return
    adapter = record.get("adapter_id") or record.get("adapter")
    if isinstance(adapter, str) and "@" in adapter:
        out.adapter_id = adapter
        out.summary = record
    step = record.get("step")
    loss = record.get("loss", record.get("train_loss"))
    if isinstance(step, int) and isinstance(loss, int | float) and not isinstance(loss, bool):
        by_step[step] = LoggedStep(step=step, train_loss=float(loss))
