"""The bundled Milvus's root password: changed once from Milvus's default, then left alone.

Milvus Lite has no users or authorization, and no Milvus server with authorization runs here, so
Milvus is played by a small stand-in that accepts exactly one root password (the one stub in this file).
"""

from __future__ import annotations

import pytest
from pymilvus.exceptions import MilvusException

from services.retrieval.milvus_auth import DEFAULT_ROOT_PASSWORD, set_root_password


class Root:
    """A Milvus's root user: refuses any token but ``root:<its password>``."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.changes = 0

    def connect(self, token: str) -> Root:
        if token != f"root:{self.password}":
            raise MilvusException(message="auth failed")
        return self

    def update_password(self, user: str, old: str, new: str) -> None:
        assert user == "root" and old == self.password
        self.password, self.changes = new, self.changes + 1

    def close(self) -> None:
        pass


def test_the_default_password_is_replaced_once():
    milvus = Root(DEFAULT_ROOT_PASSWORD)
    assert set_root_password(milvus.connect, "s3cret-from-the-secret") == "changed"
    assert milvus.password == "s3cret-from-the-secret"
    assert set_root_password(milvus.connect, "s3cret-from-the-secret") == "unchanged"
    assert milvus.changes == 1


def test_a_root_password_changed_by_hand_is_not_overwritten():
    milvus = Root("someone-elses")
    with pytest.raises(MilvusException):
        set_root_password(milvus.connect, "s3cret-from-the-secret")
    assert milvus.password == "someone-elses"
