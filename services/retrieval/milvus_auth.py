"""``python -m services.retrieval.milvus_auth``: give the bundled Milvus's ``root`` user the platform's password.

Milvus with authorization on starts with ``root`` / ``Milvus``, a password everyone knows. The
chart runs this after each install and upgrade (a Job with the password from its Secret): it
changes the default to the Secret's password, and does nothing once that is done. A Milvus that
does not answer yet is a failure the Job retries.

Environment: ``ADEPT_MILVUS_URI``, ``ADEPT_MILVUS_ROOT_PASSWORD``, and for TLS
``ADEPT_MILVUS_TLS_CA_FILE`` / ``ADEPT_MILVUS_TLS_SERVER_NAME`` (as ``PlatformConfig`` reads them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_ROOT_PASSWORD = "Milvus"  # Milvus's built-in root password


def set_root_password(connect: Callable[[str], Any], password: str) -> str:
    """Make ``root``'s password ``password``; returns ``"unchanged"`` or ``"changed"``.

    Args:
        connect: Opens a client with a token (``root:<password>``); raises when Milvus refuses it.
        password: The password root must end up with.

    Raises:
        Whatever ``connect`` raises when neither password is accepted (Milvus not up, or root's
        password is neither: someone changed it by hand).
    """
    from pymilvus.exceptions import MilvusException

    try:
        client = connect(f"root:{password}")
    except MilvusException:
        client = None  # not (yet) this password: try Milvus's default below
    if client is not None:
        client.close()
        return "unchanged"
    client = connect(f"root:{DEFAULT_ROOT_PASSWORD}")
    try:
        client.update_password("root", DEFAULT_ROOT_PASSWORD, password)
    finally:
        client.close()
    return "changed"


def main() -> int:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    from adept.config.platform import load_platform_config

    password = os.environ.get("ADEPT_MILVUS_ROOT_PASSWORD", "")
    if len(password) < 8:  # Milvus refuses shorter passwords
        print(
            "error: ADEPT_MILVUS_ROOT_PASSWORD must hold the root password (8+ characters)", file=sys.stderr
        )
        return 2
    cfg = load_platform_config()

    def connect(token: str) -> Any:
        client = MilvusClient(cfg.resolved_milvus_uri, token=token, **cfg.milvus_client_options())
        client.list_users()  # a connection alone does not prove the token is accepted
        return client

    try:
        outcome = set_root_password(connect, password)
    except MilvusException as e:
        print(f"error: cannot set Milvus's root password at {cfg.resolved_milvus_uri}: {e}", file=sys.stderr)
        return 1
    print(f"Milvus root password {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
