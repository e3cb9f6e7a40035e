"""Run commands inside a built image without a container daemon: ``buildah from`` + ``buildah run``.

``podman run`` cannot start containers on these machines (ENVIRONMENT.md); ``buildah run --isolation
chroot --network host`` runs a command in the image's filesystem, as the image's user, with the
environment and volumes a pod would give it. The smoke test runs in its own network and PID namespaces
(``make image-smoke``), so "host network" is a private loopback and every process ends with the test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx


def image_exists(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0


class Container:
    """A working container of ``image``; each ``run``/``start`` is one process in it."""

    def __init__(self, image: str, *, user: str = "1000:100", hosts: dict[str, str] | None = None) -> None:
        self.image = image
        self.user = user
        self.id = subprocess.run(
            ["buildah", "from", "--quiet", "--pull-never", image], check=True, capture_output=True, text=True
        ).stdout.strip()
        self._hosts_file: Path | None = None
        if hosts is not None:
            # The cluster's DNS names of the pod's peers, pointed at loopback (the private network namespace).
            fd, name = tempfile.mkstemp(prefix="adept-hosts-")
            lines = ["127.0.0.1 localhost"] + [f"{ip} {host}" for host, ip in hosts.items()]
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.close(fd)
            os.chmod(name, 0o644)
            self._hosts_file = Path(name)
        self.procs: list[subprocess.Popen] = []

    def _argv(
        self, cmd: Sequence[str], env: dict[str, str], volumes: dict[str, str], workdir: str | None
    ) -> list[str]:
        argv = ["buildah", "run", "--isolation", "chroot", "--network", "host", "--user", self.user]
        if self._hosts_file is not None:
            argv += ["--no-hosts", "-v", f"{self._hosts_file}:/etc/hosts:ro"]
        for host, target in volumes.items():
            argv += ["-v", f"{host}:{target}"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        if workdir:
            argv += ["--workingdir", workdir]
        return [*argv, self.id, "--", *cmd]

    def run(
        self,
        cmd: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        volumes: dict[str, str] | None = None,
        workdir: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        """Run ``cmd`` to completion; stdout and stderr are captured."""
        argv = self._argv(cmd, env or {}, volumes or {}, workdir)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def start(
        self,
        cmd: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        volumes: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start ``cmd`` in the background (its own process group), output to ``log``."""
        out = open(log, "ab")  # noqa: SIM115 - owned by the process, closed in stop()
        proc = subprocess.Popen(
            self._argv(cmd, env or {}, volumes or {}, None),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc._adept_log = out  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        """SIGTERM every process this ``start`` spawned (by pid: Ray's daemons leave the process group), then SIGKILL.

        The chart's preStop hook runs ``ray stop``, which kills by process name; here the tree is walked instead,
        so nothing but what this test started is touched.
        """
        import psutil

        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        if proc.poll() is None:
            proc.wait(10)
        proc._adept_log.close()  # type: ignore[attr-defined]

    def remove(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        subprocess.run(["buildah", "rm", self.id], check=False, capture_output=True)
        if self._hosts_file is not None:
            self._hosts_file.unlink(missing_ok=True)


def wait_for(
    what: str, check: Callable[[], Any], *, timeout: float, interval: float = 1.0, log: Path | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the tail of ``log`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, httpx.HTTPError, ValueError) as e:  # a server that is not up yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}\n{tail}")


def owned_dir(root: Path, name: str) -> Path:
    """A fresh directory owned by uid 1000 / gid 100, as a volume with the chart's fsGroup would be."""
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 1000, 100)
    path.chmod(0o775)
    return path
