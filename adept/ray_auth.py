"""Ray token authentication: every Ray cluster Adept starts or talks to demands a token.

Ray (2.52+) authenticates every RPC and HTTP entry point of a cluster whose processes run with
``RAY_AUTH_MODE=token``; the token comes from ``RAY_AUTH_TOKEN``, else the file named by
``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``. Adept never relies on that last, user-wide
file (shared by every Ray cluster of the user, created 0644), nor on Ray's default mode:

- a local cluster (``adept up``, a local training run) gets ``RAY_AUTH_MODE=token`` explicitly and a
  token of its own, ``<data_dir>/ray_auth_token`` (0600), whatever the caller's environment says;
  it also stays on loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray's servers bind 127.0.0.1);
- clients (the operator, ``adept finetune --address``, in-process job submission) send the token of
  the cluster they call as ``Authorization: Bearer`` (``jobs_client``).

On Kubernetes, KubeRay's ``authOptions`` puts the token from a Secret into every Ray container;
the operator reads the same Secret (``ADEPT_RAY_TOKEN``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adept.errors import StorageError, Unavailable

TOKEN_FILE = "ray_auth_token"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# Ray's switch between "one machine" and "a cluster": 0 makes GCS, raylet and agents bind 127.0.0.1.
CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def token_path(data_dir: str | Path) -> Path:
    """Where the local cluster of ``data_dir`` keeps its token."""
    return Path(data_dir) / TOKEN_FILE


def load_or_create_token(path: str | Path) -> str:
    """The token in ``path``, created (256 random bits, mode 0600) when missing or empty.

    ``O_EXCL`` makes two processes starting together agree on one token; an existing file is
    tightened to 0600 (an older one may have been created wider).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            os.chmod(path, 0o600)
            existing = path.read_text(encoding="utf-8").strip()
            if existing:
                return existing
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)  # an empty leftover: fill it
        token = secrets.token_hex(32)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token)
    except OSError as e:
        raise StorageError(f"cannot read or create the Ray token file {path}: {e.strerror or e}") from None
    return token


def local_cluster_env(data_dir: str | Path) -> dict[str, str]:
    """Environment for a local Ray cluster of ``data_dir``, and for the clients on this machine.

    Creates the token file if needed. Token auth is on whatever the caller's environment says
    (a stray ``RAY_AUTH_MODE=disabled`` does not turn it off); the cluster binds loopback only.
    """
    path = token_path(data_dir)
    load_or_create_token(path)
    return {AUTH_MODE_ENV: "token", TOKEN_PATH_ENV: str(path), CLUSTER_ENV: "0"}


def use_local_cluster_env(data_dir: str | Path) -> dict[str, str | None]:
    """Put ``local_cluster_env`` into this process (before it starts or joins Ray); returns the old values.

    A ``RAY_AUTH_TOKEN`` in the environment is removed: it would take precedence over the data
    dir's token. Ray caches its auth mode and token per process; both are reloaded here, so a
    process that used Ray before (a test run, a notebook) switches too. ``restore_env`` undoes it.
    """
    env = local_cluster_env(data_dir)
    old = {k: os.environ.get(k) for k in (*env, TOKEN_ENV)}
    os.environ.update(env)
    os.environ.pop(TOKEN_ENV, None)
    _loopback_in_process(True)
    reload_ray_auth()
    return old


def restore_env(old: Mapping[str, str | None]) -> None:
    """Undo ``use_local_cluster_env`` (set each variable, unset the ``None`` ones); Ray re-reads its auth."""
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _loopback_in_process(old.get(CLUSTER_ENV) == "0")
    reload_ray_auth()


def _loopback_in_process(loopback: bool) -> None:
    """Apply ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` to a Ray already imported in this process.

    Ray reads it once, when ``ray._private.ray_constants`` is imported, and the driver then picks
    the node address every server binds (measured: set after the import, GCS, raylet and agents
    still listened on all interfaces). New processes read the environment variable itself.
    """
    import sys

    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = not loopback


def reload_ray_auth() -> None:
    """Make Ray re-read ``RAY_AUTH_MODE`` and the token in this process (it caches both at first use)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def auth_headers(token: str | None) -> dict[str, str]:
    """HTTP headers that authenticate to a Ray dashboard / Jobs API (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def jobs_client(address: str, token: str | None) -> Any:
    """A Ray ``JobSubmissionClient`` for ``address`` that sends ``token``.

    Without a token, Ray's own rule applies (a token only when this process runs with
    ``RAY_AUTH_MODE=token``), so a cluster with token auth refuses the client.

    Raises:
        Unavailable: the dashboard does not answer, or refuses the token.
    """
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers(token))
    except (
        Exception
    ) as e:  # ConnectionError, or RuntimeError for any HTTP failure (the SDK's errors carry no type)
        raise Unavailable(f"Ray at {address} unreachable: {type(e).__name__}: {e}") from None
