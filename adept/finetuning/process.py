"""Training processes of the embedded platform: start one, tell whether it still runs, stop it.

A job's process runs in its own session (so a Ctrl-C meant for ``adept up`` does not reach it,
and it can be stopped as a group) with its output appended to a log file in the data dir. It is
known by pid *and* start time (``RunState.pid`` / ``create_time``), so a reused pid is never
mistaken for it — which lets any process of the platform (the runner after a restart, the
gateway cancelling a job) find and stop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from adept.errors import StorageError
from adept.finetuning.jobs import RunState

_SAME_START_S = 0.05


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path
) -> tuple[subprocess.Popen, float]:
    """Start ``argv`` in a new session, output appended to ``log_path``; returns it and its start time."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as e:
        raise StorageError(f"cannot start the training process ({argv[0]}): {e.strerror or e}") from None
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        started = time.time()  # it already ended: alive() will say so
    return proc, started


def _process(run: RunState) -> psutil.Process | None:
    if not run.pid or run.create_time is None:
        return None
    try:
        proc = psutil.Process(run.pid)
        if abs(proc.create_time() - run.create_time) > _SAME_START_S:
            return None  # the pid now belongs to another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return None  # another user's process: not ours


def alive(run: RunState) -> bool:
    """Whether the job's training process is still running."""
    return _process(run) is not None


def stop(run: RunState, *, grace_s: float = 10.0) -> bool:
    """Stop the job's process group: SIGTERM, then SIGKILL after ``grace_s``. False when nothing ran."""
    proc = _process(run)
    if proc is None:
        return False
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)  # the process leads its own session, hence its group
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:
            proc.wait(timeout=wait)
            return True
        except psutil.TimeoutExpired:
            continue
    return True
