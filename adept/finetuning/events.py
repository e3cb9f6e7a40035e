"""Progress as structured events: what a training run reports, one JSON object per line.

The training entry point and its recipe (``training/finetune.py``,
``training/recipes/lora_finetune.py``) call ``emit``; each event is one line of the run's
output whose JSON object starts with the key ``"adept"`` (its kind):

- ``{"adept": "step", "step", "total_steps", "train_loss", "eval_loss"?, "lr", "tokens", "checkpoint"?}``
- ``{"adept": "resumed", "from_step"}`` — training went on from a checkpoint;
- ``{"adept": "result", "run_dir", "steps", "tokens_seen", ...}`` — the run's result is staged;
- ``{"adept": "error", "code", "message", "param"}`` — why it failed (a typed ``AdeptError``).

Both executors read the same stream: the local process's output file, Ray Jobs' job logs (where
Ray may prefix a worker's line with ``(RayTrainWorker pid=..)``, so the object is found by its
opening, not at the start of the line). Nothing else in a log is read.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MARK = '{"adept": '


def emit(kind: str, **fields: Any) -> None:
    """Write one event line to stdout (``sys.stdout`` itself: Ray Train's print() would echo it twice)."""
    line = json.dumps({"adept": kind, **{k: v for k, v in fields.items() if v is not None}}, default=str)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read_events(text: str) -> list[dict[str, Any]]:
    """Every event in ``text``, in order; other lines are skipped."""
    out = []
    for line in text.splitlines():
        at = line.find(MARK)
        if at < 0:
            continue
        try:
            event = json.loads(line[at:])
        except ValueError:
            continue  # a line cut short (a killed process): not an event
        if isinstance(event, dict):
            out.append(event)
    return out


def outcome_of(events: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The run's last result and last error events (a retried run may have both: the last one wins)."""
    result = error = None
    for e in events:
        if e.get("adept") == "result":
            result, error = e, None
        elif e.get("adept") == "error":
            result, error = None, e
    return result, error
