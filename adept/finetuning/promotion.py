"""Eval-gated promotion of a job's adapter version: the one implementation every job path calls.

A job that names an evaluation file (``JobRequest.evaluation_file`` through the API;
``FineTuneJobConfig.evaluation_file`` in a ``FineTuneJob`` or an ``adept finetune`` config) has
its version published **inactive**; the job owner (``FineTuning.finish`` → ``_publish``, whichever
executor ran it: the embedded runner's local process or the operator's Ray Jobs) then calls
``promote_version``, which asks ``Platform.promote`` to measure it against **the active one** and
decide:

- *the active one* is the version of the same adapter name that serves the tenant's requests now
  (the pinned version, else the latest published before this one); with none (the adapter's first
  version) the new version goes live;
- it goes live only if its ``promotion_metric`` is not lower than the active one's by more than
  ``promotion_margin`` (``FineTuningConfig``); otherwise it stays published and inactive.

Both versions are measured by the same injected ``Evaluator`` (the tools layer's, which asks the
questions through the tenant's own completion path with the real model). The outcome
(``AdapterEvaluation``) is recorded in the version's registry manifest (``Platform.promote``), on
the job record (its events, its checkpoint's ``eval_*`` metrics) and, on a cluster, in the
``Adapter`` resource's status (the operator mirrors the manifests). Activating a version by hand
and rolling back stay one command each (``adept adapter activate``; ``spec.activeVersion``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from adept.config.adapter import AdapterEvaluation
from adept.config.finetuning import FineTuningConfig
from adept.errors import AdeptError, InvalidRequest, NotFound
from adept.evalset import EvalSet, check_evaluation_file
from adept.finetuning.files import EVALS, FileStore, file_not_found
from adept.finetuning.jobs import Note

# ``evaluate("tenant/name@vN")`` -> every metric's mean on the job's evaluation set (``Platform.promote``).
Evaluate = Callable[[str], Awaitable[dict[str, float]]]


class Evaluator(Protocol):
    """Measures a tenant's adapter versions on an evaluation set with the real model (the tenant's
    own completion path: ``tools.eval.promotion``)."""

    def __call__(self, tenant: str, eval_set: EvalSet) -> Evaluate: ...


def read_evaluation_file(files: FileStore, tenant: str, ref: str) -> bytes:
    """The content of a job's evaluation file: one of ``tenant``'s ``evals`` uploads (``file-...``), an
    absolute path, or an fsspec URI (a config's, as ``data.path`` is). NotFound / InvalidRequest
    name ``evaluation_file``."""
    if ref.startswith("file-"):
        try:
            record = files.get(tenant, ref)
        except NotFound:
            err = file_not_found(ref)
            err.param = "evaluation_file"
            raise err from None
        if record.purpose != EVALS:
            raise InvalidRequest(
                f"file {ref} has purpose {record.purpose!r}; upload an evaluation set with purpose {EVALS!r}",
                param="evaluation_file",
            )
        return files.content(tenant, ref)
    if "://" in ref and not ref.startswith("file://"):
        import fsspec

        try:
            with fsspec.open(ref, "rb") as f:
                return f.read()
        except (OSError, ValueError) as e:
            raise NotFound(f"evaluation_file {ref!r} cannot be read: {e}", param="evaluation_file") from None
    path = Path(ref.removeprefix("file://"))
    if not path.is_absolute():
        raise InvalidRequest(
            f"evaluation_file {ref!r}: name a tenant's evals file (file-...), an absolute path or a URI",
            param="evaluation_file",
        )
    try:
        return path.read_bytes()
    except OSError as e:
        raise NotFound(
            f"evaluation_file {ref!r} cannot be read: {e.strerror or e}", param="evaluation_file"
        ) from None


def check_evaluation(data: bytes, source: str, settings: FineTuningConfig) -> EvalSet:
    """The evaluation set, checked (every bad line at once) to measure the promotion metric."""
    return check_evaluation_file(data, source, metric=settings.promotion_metric)


async def promote_version(
    platform: Any,
    settings: FineTuningConfig,
    evaluator: Evaluator | None,
    *,
    tenant: str,
    adapter: str,
    version: Any,
    evaluation_file: str,
    data: bytes | None,
    at: int,
) -> tuple[Note, AdapterEvaluation | None]:
    """Measure ``version`` (published inactive) against the active one and activate it or not.

    Returns the job's ``promotion`` event and what was measured (None when nothing was). Never
    raises for a measuring problem: the version then stays inactive and the event says why.
    """
    s = settings
    if evaluator is None:
        message = (
            f"{version.id} was published inactive and not measured: this platform runs no evaluator for "
            f"{evaluation_file}; activate it by hand to serve it"
        )
        return Note(at=at, key="promotion", level="warn", message=message), None
    try:
        if data is None:
            raise InvalidRequest("the evaluation file could not be read", param="evaluation_file")
        eval_set = check_evaluation(data, evaluation_file, s)
        outcome = await platform.promote(
            tenant,
            adapter,
            version.version,
            evaluator(tenant, eval_set),
            metric=s.promotion_metric,
            margin=s.promotion_margin,
            evaluation_file=evaluation_file,
        )
    except AdeptError as e:
        message = (
            f"{version.id} was published inactive: evaluating it on {evaluation_file} failed ({e.message}); "
            "activate it by hand to serve it"
        )
        return Note(at=at, key="promotion", level="warn", message=message), None
    scores = f"{s.promotion_metric} {outcome.score:.3f}" + (
        f" vs {outcome.against_score:.3f} for {outcome.against}" if outcome.against_score is not None else ""
    )
    note = Note(
        at=at,
        key="promotion",
        level="info" if outcome.promoted else "warn",
        message=f"{'Promoted' if outcome.promoted else 'Kept inactive'} ({scores}): {outcome.reason}",
    )
    return note, outcome
