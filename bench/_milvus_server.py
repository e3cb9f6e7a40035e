"""A real Milvus server (PyPI ``milvus``, an embedded standalone build) that nobody outside can reach.

The ``milvus`` package starts ``milvus run standalone``, whose gRPC, metrics and coordinator ports
listen on every interface (only its etcd binds 127.0.0.1). So the server and its client run inside
a fresh network namespace (``unshare --net``) that holds nothing but loopback: whatever the server
binds, no other host can reach it, and it cannot reach out either.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

# The client must not send loopback traffic to a proxy (gRPC and urllib both honour these).
PROXY_VARS = (
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "grpc_proxy",
    "all_proxy",
    "ALL_PROXY",
)


def isolation_prefix() -> tuple[list[str] | None, str]:
    """``(command prefix, "")`` that runs a command in a loopback-only network namespace, or
    ``(None, why not)`` when that cannot be done here (then no server is started at all)."""
    if importlib.util.find_spec("milvus") is None:
        return None, "the PyPI package `milvus` (embedded Milvus server) is not installed"
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip:
        return None, "`unshare` and `ip` are needed to give the server a loopback-only network namespace"
    probe = subprocess.run(
        [unshare, "--net", "--", ip, "link", "set", "lo", "up"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["unknown error"]
        return None, f"cannot create a network namespace ({reason[0]}; needs root or CAP_SYS_ADMIN)"
    # Inside: bring loopback up, then exec the worker; the namespace dies with its last process.
    return [unshare, "--net", "--", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"'], ""


def interfaces() -> set[str]:
    """Network interfaces this process can see (Linux)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines}


class IsolatedMilvus:
    """Start the ``milvus`` package's server in ``base_dir``; refuses unless only loopback is visible.

    Args:
        base_dir: Binaries, config, logs and data go here (removed by ``stop``).
    """

    def __init__(self, base_dir: Path) -> None:
        seen = interfaces()
        if seen != {"lo"}:
            raise RuntimeError(
                f"refusing to start Milvus: interfaces {sorted(seen)} are visible, not only lo"
            )
        for var in PROXY_VARS:
            os.environ.pop(var, None)
        from milvus import MilvusServer

        self.base_dir = base_dir
        self.server = MilvusServer()
        self.server.set_base_dir(str(base_dir))

    def start(self) -> str:
        """Start and wait for health; returns the client URI."""
        self.server.start()
        return f"http://127.0.0.1:{self.server.listen_port}"

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> IsolatedMilvus:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
