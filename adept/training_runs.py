"""Fine-tuning runs in the platform's training storage, and the result a run hands to its publisher.

A run directory (``<storage>/<run name>``) holds ``JOB_STATE_FILE`` — the run's tenant, adapter and
id — Ray Train's checkpoints, and, once training ended, ``RESULT_DIR``: the adapter in PEFT format
with ``manifest.json`` (its ``metrics.run_id`` names the run), ``metrics.json`` and
``loss_curve.png``. That directory is the hand-off between training and publishing:

- on one machine the job publishes it itself (``training_publish: direct``);
- on a cluster the job has no platform credentials (``training_publish: handoff``), and the
  operator publishes it when the FineTuneJob succeeds, with its own ``Platform``.

Either way ``adept.platform.Platform.publish_run`` does it, once per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adept.errors import InvalidRequest, NotFound, StorageError, Unavailable

# The run state file training writes in each run directory (training.finetune reads and writes it).
JOB_STATE_FILE = "adept_job.json"
RESULT_DIR = "result"
# Published beside the PEFT files and the manifest, in the same atomic step.
RESULT_EXTRAS = ("metrics.json", "loss_curve.png")
RUN_ID_KEY = "run_id"


@dataclass(frozen=True)
class RunState:
    """What ``JOB_STATE_FILE`` says about a run."""

    tenant: str
    adapter: str
    run_id: str
    data: dict[str, Any]


@contextlib.contextmanager
def local_dir(uri: str, *, what: str) -> Iterator[Path]:
    """A directory ``uri`` as a local one: itself (a path or ``file://``), or a temporary download of an
    fsspec URI (``s3://...``) removed afterwards. ``what`` names it in the error.

    Raises:
        Unavailable: the download failed (missing, forbidden, unreachable).
    """
    if "://" not in uri or uri.startswith("file://"):
        yield Path(uri.removeprefix("file://"))
        return
    import fsspec

    tmp = tempfile.mkdtemp(prefix="adept-download-")
    try:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        except (OSError, ValueError) as e:  # fsspec: FileNotFoundError/PermissionError/ClientError; bad URIs
            raise Unavailable(f"cannot download {what} {uri}: {type(e).__name__}: {e}") from None
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_run(run_dir: Path) -> RunState:
    """The run's state; NotFound when the run never started here, InvalidRequest when it is unreadable."""
    path = Path(run_dir) / JOB_STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no training run at {run_dir}") from None
    except (OSError, ValueError) as e:
        raise InvalidRequest(f"{path}: unreadable run state: {e}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("tenant", "adapter", "run_id")
    ):
        raise InvalidRequest(f"{path}: run state lacks tenant, adapter or run_id")
    return RunState(data["tenant"], data["adapter"], data["run_id"], data)


def find_run_version(registry: Any, tenant: str, name: str, run_id: str) -> Any | None:
    """The version of ``tenant/name`` published from run ``run_id``, if any (one version per run)."""
    for version in registry.list(tenant):
        if version.name == name and version.manifest.metrics.get(RUN_ID_KEY) == run_id:
            return version
    return None


class TrainingRuns:
    """Fine-tuning runs (checkpoints, job state) under the platform's training storage.

    Each run directory holds ``JOB_STATE_FILE`` naming its tenant; checkpoints hold adapter weights
    trained on that tenant's data, so they go with the tenant.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def runs_of(self, tenant: str) -> list[Path]:
        out = []
        for state in sorted(self.root.glob(f"*/{JOB_STATE_FILE}")):
            try:
                owner = json.loads(state.read_text(encoding="utf-8")).get("tenant")
            except (OSError, ValueError, AttributeError):
                continue  # unreadable or foreign: not provably the tenant's
            if owner == tenant:
                out.append(state.parent)
        return out

    async def purge_tenant(self, tenant: str) -> int:
        runs = await asyncio.to_thread(self.runs_of, tenant)
        for run in runs:
            await asyncio.to_thread(_remove_tree, run)
        return len(runs)


def _remove_tree(path: Path) -> None:
    # Rename first, so a half-removed run is never mistaken for a resumable one.
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex}")
    try:
        path.rename(trash)
    except FileNotFoundError:
        return
    except OSError as e:
        raise StorageError(f"cannot remove training run {path}: {e.strerror or e}") from None
    shutil.rmtree(trash, ignore_errors=True)
