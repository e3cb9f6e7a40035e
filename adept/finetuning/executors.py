"""Where a job's training runs: two executors behind one ``Executor`` protocol.

- ``LocalProcess`` (embedded mode): ``python -m training.finetune --config job.yaml`` as a
  supervised process of this machine, joined to the platform's Ray, its output appended to
  ``<data_dir>/finetuning/jobs/<id>/train.log``;
- ``RayJobs`` (a cluster): the same entry point submitted through Ray's Jobs API (token auth),
  its config in the job's ``working_dir``, its driver reserving ``entrypoint_num_cpus`` (so it
  runs on a worker: the training head offers no CPU); the operator drives it.

Both run the same entry point and are read the same way: the structured events the run writes
(``adept.finetuning.events``), from the output file or the Ray job's logs. The driver
(``adept.finetuning.runner``) moves jobs through the state machine with what an executor
observes; an executor never writes a job's state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from adept.errors import StorageError, Unavailable
from adept.finetuning import process
from adept.finetuning.events import read_events
from adept.finetuning.jobs import JobRecord, RunState
from adept.placement import ENTRYPOINT_NUM_CPUS

# Secrets and settings of this process that the job must not inherit (it gets platform.yaml instead).
_DROPPED_ENV_PREFIXES = ("ADEPT_",)
_RAY_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


@dataclass
class Observation:
    """What an executor saw of a run: is it still going, its new events, how far they were read,
    and (once it ended) every event of this attempt, for its result or error."""

    running: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    attempt_events: list[dict[str, Any]] = field(default_factory=list)


class Executor(Protocol):
    """Starts, observes and stops one job's training runs."""

    name: str

    def start(self, record: JobRecord) -> RunState:
        """Start a run of ``record.config``; returns its handle (stored on the record by the driver)."""
        ...

    def observe(self, record: JobRecord) -> Observation: ...

    def stop(self, record: JobRecord) -> bool:
        """Stop the run if it still goes; False when nothing ran."""
        ...

    def forget(self, record: JobRecord) -> None:
        """Remove what the executor keeps of a finished job (its directory, its Ray job)."""
        ...


def training_env(platform: Any, job_dir: Path) -> dict[str, str]:
    """The environment of a local training process: this one's, minus Adept's settings and secrets,
    plus the platform's config file and the local Ray's token auth (``adept.ray_auth``)."""
    from adept.ray_auth import local_cluster_env

    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    config = platform.model_dump(mode="json", exclude_none=True, exclude={"milvus_token"})
    path = job_dir / "platform.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env.update(ADEPT_CONFIG=str(path), PYTHONUNBUFFERED="1", **local_cluster_env(platform.data_dir))
    return env


class LocalProcess:
    """Runs jobs as supervised processes of this machine (known by pid and start time).

    Args:
        platform: The ``PlatformConfig`` the jobs publish to (written to each job's ``platform.yaml``).
        ray_address: The platform's Ray (GCS address) the jobs join; None: each starts its own.
        entrypoint: The command before ``--config job.yaml``; default ``python -m training.finetune``.
    """

    name = "local"

    def __init__(self, platform: Any, *, ray_address: str | None = None, entrypoint: list[str] | None = None):
        self.platform = platform
        self.ray_address = ray_address
        self.entrypoint = entrypoint or [sys.executable, "-m", "training.finetune"]
        self.jobs_dir = platform.data_dir / "finetuning" / "jobs"
        self._children: dict[str, subprocess.Popen] = {}

    def start(self, record: JobRecord) -> RunState:
        job_dir = self.jobs_dir / record.id
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / "job.yaml").write_text(
                yaml.safe_dump(record.config, sort_keys=False), encoding="utf-8"
            )
            env = training_env(self.platform, job_dir)
        except OSError as e:
            raise StorageError(f"cannot prepare {job_dir}: {e.strerror or e}") from None
        argv = [*self.entrypoint, "--config", "job.yaml", "--address", self.ray_address or "local"]
        log_path = job_dir / "train.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        child, started = process.spawn(argv, env=env, cwd=job_dir, log_path=log_path)
        self._children[record.id] = child
        return RunState(
            executor=self.name,
            pid=child.pid,
            create_time=started,
            log_path=str(log_path),
            log_start=offset,
            log_offset=offset,
        )

    def observe(self, record: JobRecord) -> Observation:
        running = process.alive(record.run)
        text, cursor = _read(record.run.log_path, record.run.log_offset, complete=not running)
        obs = Observation(running, read_events(text), cursor)
        if not running:
            whole, _ = _read(record.run.log_path, record.run.log_start, complete=True)
            obs.attempt_events = read_events(whole)
        return obs

    def stop(self, record: JobRecord) -> bool:
        stopped = process.stop(record.run)
        child = self._children.pop(record.id, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        return stopped

    def forget(self, record: JobRecord) -> None:
        shutil.rmtree(self.jobs_dir / record.id, ignore_errors=True)


class RayJobs:
    """Runs jobs through a Ray cluster's Jobs API (token auth): one submission per attempt.

    Args:
        client: A ``JobSubmissionClient`` (``adept.ray_auth.jobs_client``).
        entrypoint: The command the job runs (the training image's ``python -m training.finetune``).
        env: Environment of the job (the training pods' platform settings; never platform secrets).
        config_file: The name the entry point reads the job's config from, in its working dir.
        entrypoint_num_cpus: CPUs the job's driver reserves (``--entrypoint-num-cpus``): the chart's
            training head offers none (``num-cpus: 0``), so the driver runs on a worker, never beside
            the autoscaler's ServiceAccount token. ``FineTuning`` counts them when it places a job on
            the cluster's shape (``adept.placement``).
    """

    name = "ray"

    def __init__(
        self,
        client: Any,
        *,
        entrypoint: str = "python -m training.finetune --config job.yaml",
        env: dict[str, str] | None = None,
        config_file: str = "job.yaml",
        entrypoint_num_cpus: float = ENTRYPOINT_NUM_CPUS,
    ) -> None:
        self.client = client
        self.entrypoint = entrypoint
        self.env = dict(env or {})
        self.config_file = config_file
        self.entrypoint_num_cpus = entrypoint_num_cpus

    def start(self, record: JobRecord) -> RunState:
        submission_id = f"{record.id}-a{record.run.attempts + 1}"
        with tempfile.TemporaryDirectory(prefix="adept-ftj-") as tmp:
            # The config travels in the working dir: no shared volume needed to reach the cluster.
            Path(tmp, self.config_file).write_text(
                yaml.safe_dump(record.config, sort_keys=False), encoding="utf-8"
            )
            try:
                self.client.submit_job(
                    entrypoint=self.entrypoint,
                    submission_id=submission_id,
                    runtime_env={"working_dir": tmp, "env_vars": self.env},
                    metadata={"adept.dev/job": record.id, "adept.dev/tenant": record.tenant},
                    entrypoint_num_cpus=self.entrypoint_num_cpus,
                )
            except Exception as e:  # the SDK's errors carry no type; a racing duplicate is found by asking
                if self._status(submission_id) is None:
                    raise Unavailable(f"Ray job submission failed: {type(e).__name__}: {e}") from None
        return RunState(executor=self.name, ref=submission_id)

    def _status(self, ref: str) -> str | None:
        try:
            status = self.client.get_job_status(ref)
        except Exception:  # the SDK raises RuntimeError for an unknown id, requests errors when away
            return None
        return str(getattr(status, "value", status))

    def observe(self, record: JobRecord) -> Observation:
        ref = record.run.ref or ""
        status = self._status(ref)
        if status is None:
            raise Unavailable(f"cannot read Ray job {ref}")
        try:
            logs = self.client.get_job_logs(ref) or ""
        except Exception as e:  # as above: untyped SDK errors
            raise Unavailable(f"cannot read the logs of Ray job {ref}: {type(e).__name__}: {e}") from None
        running = status not in _RAY_TERMINAL
        if running:  # only complete lines: the last one may still be written
            logs = logs[: logs.rfind("\n") + 1]
        obs = Observation(running, read_events(logs[record.run.log_offset :]), len(logs))
        if not running:
            obs.attempt_events = read_events(logs)
        return obs

    def stop(self, record: JobRecord) -> bool:
        ref = record.run.ref
        if not ref or self._status(ref) in (None, *_RAY_TERMINAL):
            return False
        try:
            return bool(self.client.stop_job(ref))
        except Exception as e:  # untyped SDK errors
            raise Unavailable(f"cannot stop Ray job {ref}: {type(e).__name__}: {e}") from None

    def forget(self, record: JobRecord) -> None:
        if record.run.ref and self._status(record.run.ref) in _RAY_TERMINAL:
            with contextlib.suppress(Exception):  # best effort: Ray forgets its jobs when it stops anyway
                self.client.delete_job(record.run.ref)


def _read(path: str, offset: int, *, complete: bool) -> tuple[str, int]:
    """Text after ``offset``, up to the last complete line (all of it once the process ended)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "", offset
    if not complete:
        data = data[: data.rfind(b"\n") + 1]
    return data.decode("utf-8", "replace"), offset + len(data)
