"""A local Ray head with token auth and its Jobs API: ``ray start --head``, as a cluster's head runs.

The head runs in processes of its own (a new session: its process group is ours to stop, and only
it), so this process — the test's clients: the operator, the Jobs SDK, the ``ray`` CLI — holds no
Ray state and no token unless a test gives it one: a client that forgets the token is refused,
as it would be by a real cluster. Every port is chosen free (other Rays may run on the machine;
Ray's fixed defaults, 6379, 10001, 52365, would collide).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adept import ray_auth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ray auth settings (a client that knows no token), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(extra)
    return env


@dataclass
class RayHead:
    """A running head: its Jobs API address and the token it demands."""

    address: str
    token: str
    token_file: Path
    temp_dir: Path
    process: subprocess.Popen = field(repr=False)

    def client(self, token: str | None = "own") -> Any:
        """A Jobs SDK client sending the head's token (``token="own"``), another token, or none."""
        from ray.job_submission import JobSubmissionClient

        sent = self.token if token == "own" else token
        return JobSubmissionClient(self.address, headers=ray_auth.auth_headers(sent))

    def stop(self) -> None:
        """Stop the head as Kubernetes stops a head pod: SIGTERM to ``ray start`` alone, then its whole group.

        ``ray start --block`` drains the node on SIGTERM (``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S``,
        30 s) through the GCS. Signalling the whole group at once killed the GCS first, so the drain
        RPC waited out its 30 s timeout on every stop; with the GCS alive, an idle node drains at once.
        """
        import psutil

        group = self.process.pid  # start_new_session: the group id is the `ray start` process's pid
        steps = (
            (lambda: os.kill(group, signal.SIGTERM), 45.0),  # beyond the drain timeout: it ends on its own
            (lambda: os.killpg(group, signal.SIGTERM), 10.0),  # anything it left behind
            (lambda: os.killpg(group, signal.SIGKILL), 10.0),
        )
        for send, grace in steps:
            if not any(_in_group(p, group) for p in psutil.process_iter(["pid"])):
                break
            try:
                send()
            except ProcessLookupError:
                pass  # the `ray start` process is gone; its group may not be
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(
                _in_group(p, group) for p in psutil.process_iter(["pid"])
            ):
                time.sleep(0.5)
        if self.process.poll() is None:
            self.process.wait(10)


def start_head(temp_dir: Path, *, num_cpus: int = 2, timeout: float = 180) -> RayHead:
    """Start the head with ``RAY_AUTH_MODE=token`` and a fresh token in ``temp_dir``; wait until jobs run."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    token_file = temp_dir / "token"
    token = ray_auth.load_or_create_token(token_file)
    port = free_port()
    env = client_env(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), **{ray_auth.CLUSTER_ENV: "0"}
    )
    ports = {
        "--port": free_port(),
        "--dashboard-port": port,
        "--dashboard-agent-listen-port": free_port(),
        "--ray-client-server-port": free_port(),
    }
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--num-cpus={num_cpus}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir / 'ray'}",
        *(f"{flag}={value}" for flag, value in ports.items()),
    ]
    with (temp_dir / "head.log").open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{port}", token, token_file, temp_dir, proc)
    try:
        _wait_for_jobs_api(head, timeout)
    except BaseException:
        head.stop()
        raise
    return head


def _wait_for_jobs_api(head: RayHead, timeout: float) -> None:
    """The dashboard answers before its job agent is up ("No available agent"): submit a probe until it runs."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while True:
        if head.process.poll() is not None:
            raise RuntimeError(f"the Ray head exited: see {head.temp_dir / 'head.log'}")
        try:
            client = head.client()
            probe = client.submit_job(entrypoint=f"{sys.executable} -c pass")
            break
        except Exception:  # not up yet: the SDK raises ConnectionError/RuntimeError for everything
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    while client.get_job_status(probe) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, "Ray Jobs API probe did not finish"
        time.sleep(0.5)


def _in_group(proc, group: int) -> bool:
    import psutil

    try:
        return os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.NoSuchProcess):
        return False
