"""The embedded platform's job runner: each job is a supervised ``python -m training.finetune`` process.

``adept up`` runs one ``JobRunner`` (a thread of its own process, outside Ray Serve) over the job
store. Every ``runner_poll_interval_s`` it moves each unfinished job along:

``validating_files`` (its files still exist?) → ``queued`` (waits for one of
``runner_max_running_jobs`` slots) → ``running``: the training entry point — the same
``python -m training.finetune --config job.yaml`` the platform team runs and the operator
submits — started in its own session, joined to the platform's Ray (``--address``), its output
appended to ``<data_dir>/finetuning/jobs/<id>/train.log``. The runner reads that log
(``adept.finetuning.progress``) for steps and losses, and its last line for the result: the
published adapter (``succeeded``) or a typed error (``failed``).

Why a supervised process rather than Ray's Jobs API: the Jobs API would be one more unauthenticated
port that runs any code it is sent, and Ray forgets its jobs when it stops, while this log and
the store live in the data dir. State is all in the store, so a restarted runner adopts the
processes still running (known by pid and start time) and re-starts, from their latest
checkpoint, the jobs that were interrupted (the training entry point resumes a run of the same
name); a gateway restart does not touch jobs at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from adept.config.finetuning import FineTuningConfig
from adept.config.platform import PlatformConfig
from adept.errors import NotFound, StorageError, Unavailable
from adept.finetuning import process
from adept.finetuning.jobs import JobError, JobRecord, Resume, RunState, StepRecord, now
from adept.finetuning.progress import TrainingLog, parse_training_log
from adept.finetuning.store import SQLiteJobStore

log = logging.getLogger(__name__)

# Training reports dataset problems with these codes; OpenAI calls them invalid training files.
_DATASET_CODES = frozenset({"invalid_dataset", "invalid_jsonl"})
# Secrets and settings of this process that the job must not inherit (it gets platform.yaml instead).
_DROPPED_ENV_PREFIXES = ("ADEPT_",)


def ray_auth_env(platform: PlatformConfig) -> dict[str, str]:
    """Environment a training process needs to join the platform's local Ray: token auth with the
    data dir's own token file, loopback only (``adept.ray_auth``), whatever this process's env says."""
    from adept.ray_auth import local_cluster_env

    return local_cluster_env(platform.data_dir)


def training_env(platform: PlatformConfig, job_dir: Path) -> dict[str, str]:
    """The environment of a training process: this one's, minus Adept's settings and secrets, plus the platform's config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    config = platform.model_dump(mode="json", exclude_none=True, exclude={"milvus_token"})
    path = job_dir / "platform.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env.update(ADEPT_CONFIG=str(path), PYTHONUNBUFFERED="1", **ray_auth_env(platform))
    return env


class JobRunner:
    """Trains the jobs of one data dir (one runner per data dir, held by a lock file).

    Args:
        store: The job store.
        platform: The platform the jobs publish to (written to each job's ``platform.yaml``).
        settings: ``FineTuningConfig`` (slots, poll interval, attempts).
        ray_address: The platform's Ray (GCS address) the jobs join; None: each job starts its own.
        entrypoint: The command before ``--config job.yaml``; default ``python -m training.finetune``.
    """

    def __init__(
        self,
        store: SQLiteJobStore,
        platform: PlatformConfig,
        settings: FineTuningConfig,
        *,
        ray_address: str | None = None,
        entrypoint: list[str] | None = None,
    ) -> None:
        self.store = store
        self.platform = platform
        self.settings = settings
        self.ray_address = ray_address
        self.entrypoint = entrypoint or [sys.executable, "-m", "training.finetune"]
        self.jobs_dir = platform.data_dir / "finetuning" / "jobs"
        self._children: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_file: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> JobRunner:
        """Take the data dir's runner lock and start reconciling in a daemon thread."""
        self._take_lock()
        self._thread = threading.Thread(target=self._loop, name="adept-job-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, interrupt_jobs: bool = True) -> None:
        """Stop reconciling; with ``interrupt_jobs`` also stop running jobs (they resume at the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if interrupt_jobs:
            for record in self.store.active():
                if record.run.pid and process.stop(record.run):
                    # No pid: the next runner starts it again without counting a failed attempt.
                    self.store.modify(record.id, _forget_process)
        for child in self._children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        self._children.clear()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _take_lock(self) -> None:
        path = self.platform.data_dir / "finetuning" / "runner.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")  # noqa: SIM115 (held open for the runner's lifetime)
        except OSError as e:
            raise StorageError(f"cannot create {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise Unavailable(
                f"another job runner already trains the jobs of {self.platform.data_dir}"
            ) from None
        self._lock_file = fh

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # one bad round must not end the runner: log it and try again
                log.exception("job runner: reconcile failed; retrying")
            self._stop.wait(self.settings.runner_poll_interval_s)

    # -- one round ---------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Move every unfinished job one step along (public for tests)."""
        for job_id, child in list(self._children.items()):
            if child.poll() is not None:  # reap: a finished child must not linger as a zombie
                del self._children[job_id]
        running = 0
        for record in self.store.active():
            if self._stop.is_set():
                return
            try:
                if record.status == "validating_files":
                    self._validate(record)
                elif record.status == "running":
                    running += int(self._follow(record))
            except NotFound:
                continue  # deleted meanwhile (its tenant went): whoever deleted it stopped its process
        for record in self.store.active():
            if record.status == "queued" and running < self.settings.runner_max_running_jobs:
                try:
                    self._start(record)
                except NotFound:
                    continue
                running += 1

    def _validate(self, record: JobRecord) -> None:
        missing = [
            (param, path)
            for param, path in (
                ("training_file", record.config["data"]["path"]),
                ("validation_file", record.config["data"].get("validation_path")),
            )
            if path and "://" not in path and not Path(path).is_file()
        ]

        def change(r: JobRecord) -> None:
            if r.status != "validating_files":
                return
            if missing:
                param, _ = missing[0]
                _fail(
                    r,
                    "invalid_training_file" if param == "training_file" else "invalid_validation_file",
                    f"the {param.replace('_', ' ')} {getattr(r, param)} was deleted before the job started",
                    param,
                )
            else:
                r.status, r.queued_at = "queued", now()

        self.store.modify(record.id, change)

    def _start(self, record: JobRecord) -> None:
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

        def change(r: JobRecord) -> None:
            r.run.pid, r.run.create_time, r.run.log_path = child.pid, started, str(log_path)
            r.run.log_start = r.run.log_offset = offset
            r.run.attempts += 1
            if r.status == "queued":
                r.status, r.started_at = "running", r.started_at or now()

        try:
            updated = self.store.modify(record.id, change)
        except NotFound:
            process.stop(RunState(pid=child.pid, create_time=started))  # deleted while starting
            raise
        if updated.status != "running":  # cancelled while starting
            process.stop(updated.run)
        log.info("job %s: started training (pid %d, attempt %d)", record.id, child.pid, updated.run.attempts)

    def _follow(self, record: JobRecord) -> bool:
        """Read the job's new log lines; settle it if its process ended. True while it still trains."""
        if record.run.pid is None:  # interrupted by a runner stop: start it again
            self.store.modify(record.id, _requeue)
            return False
        running = process.alive(record.run)
        text, offset = _read_log(record.run.log_path, record.run.log_offset, complete=not running)
        parsed = parse_training_log(text)

        def change(r: JobRecord) -> None:
            if r.status != "running":
                return
            _apply_progress(r, parsed)
            r.run.log_offset = offset
            if not running:
                # The result is this attempt's last line, which an earlier round may have read already.
                whole, _ = _read_log(r.run.log_path, r.run.log_start, complete=True)
                self._settle(r, parse_training_log(whole))

        self.store.modify(record.id, change)
        return running

    def _settle(self, r: JobRecord, parsed: TrainingLog) -> None:
        if parsed.summary is not None and (parsed.adapter_id or "").startswith(f"{r.tenant}/{r.adapter}@"):
            r.status, r.finished_at = "succeeded", now()
            r.fine_tuned_model = r.adapter
            tokens = parsed.summary.get("tokens_seen")
            r.trained_tokens = int(tokens) if isinstance(tokens, int) else r.tokens_trained()
        elif parsed.summary is not None:
            _fail(
                r, "unexpected_result", f"training published {parsed.adapter_id}, not {r.tenant}/{r.adapter}"
            )
        elif parsed.error is not None:
            code = parsed.error["code"]
            param = parsed.error.get("param")
            if code in _DATASET_CODES:
                code, param = "invalid_training_file", param or "training_file"
            _fail(r, code, parsed.error["message"], param)
        elif r.cancel_requested:
            r.status, r.finished_at = "cancelled", r.finished_at or now()
        else:
            r.run.failures += 1
            if r.run.failures < self.settings.runner_max_attempts:
                _requeue(r)  # died without a word (killed, out of memory): go on from the last checkpoint
            else:
                _fail(
                    r,
                    "training_failed",
                    f"the training process ended without a result {r.run.failures} times; see {r.run.log_path}",
                )


def _apply_progress(r: JobRecord, parsed: TrainingLog) -> None:
    at = now()
    for step in parsed.steps:
        r.record_step(
            StepRecord(
                step=step.step,
                at=at,
                total_steps=step.total_steps,
                train_loss=step.train_loss,
                valid_loss=step.valid_loss,
                tokens=step.tokens,
            )
        )
    for from_step in parsed.resumed_from:
        r.resumes.append(Resume(at=at, from_step=from_step))  # training went on from a checkpoint


def _requeue(r: JobRecord) -> None:
    r.resumes.append(Resume(at=now(), interrupted=True))
    r.status = "queued"
    _forget_process(r)


def _forget_process(r: JobRecord) -> None:
    r.run.pid, r.run.create_time = None, None


def _fail(r: JobRecord, code: str, message: str, param: str | None = None) -> None:
    r.status, r.finished_at = "failed", now()
    r.error = JobError(code=code, message=message[:4000], param=param)


def _read_log(path: str, offset: int, *, complete: bool) -> tuple[str, int]:
    """Text after ``offset``, up to the last complete line (all of it once the process ended)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "", offset
    if not complete:
        cut = data.rfind(b"\n") + 1
        data = data[:cut]
    return data.decode("utf-8", "replace"), offset + len(data)
