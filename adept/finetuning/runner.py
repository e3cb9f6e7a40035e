"""The driver: moves unfinished jobs through the state machine with one executor.

``JobRunner.reconcile`` is one round over the store's unfinished jobs:

``validating_files`` (``FineTuning.queue``: its files still exist?) → ``queued`` (waits for one of
``runner_max_running_jobs`` slots; ``Executor.start``, ``FineTuning.started``) → ``running``
(``Executor.observe``: the run's structured events → ``FineTuning.observe``; once it ended,
``FineTuning.finish``: publish, fail with its typed error, or run again from its checkpoint).
Finished jobs past their retention are pruned (``FineTuning.prune``).

Embedded mode (``adept up``) runs it in a thread over the ``LocalProcess`` executor, one runner
per data dir (a lock file); ``adept finetune`` runs the same round in the foreground for one
job. The operator runs it over ``RayJobs`` from its FineTuneJob timer. Every state change is the
``FineTuning`` service's; this module only decides when.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from typing import Any

from adept.errors import NotFound, StorageError, Unavailable
from adept.finetuning.events import outcome_of
from adept.finetuning.executors import Executor
from adept.finetuning.jobs import JobRecord
from adept.finetuning.service import FineTuning, Outcome

log = logging.getLogger(__name__)
_PRUNE_EVERY_S = 600.0


class JobRunner:
    """Runs the jobs of one store with one executor.

    Args:
        service: The ``FineTuning`` owner (store, settings, publishing), with its executor
            (``LocalProcess`` or ``RayJobs``).
    """

    def __init__(self, service: FineTuning) -> None:
        if service.executor is None:
            raise ValueError("a job runner needs a FineTuning with an executor")
        self.service = service
        self.executor: Executor = service.executor
        self.settings = service.settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_file: Any = None
        self._pruned_at = 0.0

    # -- lifecycle (embedded) ------------------------------------------------------------------------
    def start(self) -> JobRunner:
        """Take the data dir's runner lock and reconcile in a daemon thread."""
        self.take_lock()
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
            for record in self.service.jobs.active():
                if record.status == "running" and self.executor.stop(record):
                    self.service.requeue(record)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def take_lock(self) -> None:
        """Become the data dir's one runner; Unavailable when another (``adept up``) is."""
        path = self.service.platform.config.data_dir / "finetuning" / "runner.lock"
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
                f"another job runner already trains the jobs of {self.service.platform.config.data_dir}"
            ) from None
        self._lock_file = fh

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # one bad round must not end the runner: log it and try again
                log.exception("job runner: reconcile failed; retrying")
            self._stop.wait(self.settings.runner_poll_interval_s)

    def run_until_finished(self, job_id: str, *, poll_s: float = 1.0) -> JobRecord:
        """Drive one job in the foreground until it finishes (``adept finetune``)."""
        while True:
            self.reconcile()
            record = self.service.jobs.modify(job_id, lambda r: None)
            if not record.active:
                return record
            time.sleep(poll_s)

    # -- one round ---------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Move every unfinished job one step along."""
        running = 0
        for record in self.service.jobs.active():
            if self._stop.is_set():
                return
            try:
                if record.status == "validating_files":
                    self.service.queue(record)
                elif record.status == "running":
                    running += int(self._follow(record))
            except NotFound:
                continue  # deleted meanwhile (its tenant went): whoever deleted it stopped its run
        for record in self.service.jobs.active():
            if record.status == "queued" and running < self.settings.runner_max_running_jobs:
                try:
                    self._start(record)
                except NotFound:
                    continue
                running += 1
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            self.service.prune()

    def step(self, record: JobRecord) -> JobRecord:
        """Move one job one step along, without slots (a cluster queues runs itself): the operator's
        FineTuneJob timer. Returns the job as it is now."""
        if record.cancel_requested and record.status == "cancelled":
            self.executor.stop(record)
            return record
        if record.status == "validating_files":
            record = self.service.queue(record)
        if record.status == "queued":
            self._start(record)
        elif record.status == "running":
            self._follow(record)
        return self.service.jobs.modify(record.id, lambda r: None)

    def _start(self, record: JobRecord) -> None:
        run = self.executor.start(record)
        try:
            updated = self.service.started(record, run)
        except NotFound:
            self.executor.stop(record.model_copy(update={"run": run}))  # deleted while starting
            raise
        if updated.status != "running":  # cancelled while starting
            self.executor.stop(updated)
        log.info(
            "job %s: started training (%s, attempt %d)", record.id, self.executor.name, updated.run.attempts
        )

    def _follow(self, record: JobRecord) -> bool:
        """Apply the run's new events; settle the job if its run ended. True while it still trains."""
        if record.run.pid is None and record.run.ref is None:  # interrupted by a runner stop: again
            self.service.requeue(record)
            return False
        obs = self.executor.observe(record)
        updated = self.service.observe(record, obs.events, obs.cursor)
        if obs.running:
            return True
        result, error = outcome_of(obs.attempt_events)
        self.service.finish(updated, Outcome(result, error), max_attempts=self.settings.runner_max_attempts)
        return False
