"""Tenant store: hash-only key storage, auth, names, durability and concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading

import pytest

from adept.config.tenant import TenantQuotas, TenantSpec
from adept.errors import AuthenticationError, Conflict, InvalidRequest, NotFound
from adept.tenancy import KEY_PREFIX, SQLiteTenantStore, TenantStore, hash_api_key


@pytest.fixture
def store(tmp_path):
    s = SQLiteTenantStore(tmp_path / "tenants.sqlite")
    yield s
    s.close()


def test_is_a_tenant_store(store):
    assert isinstance(store, TenantStore)


def test_create_authenticate_and_key_is_only_stored_hashed(store, tmp_path):
    tenant, key = store.create(
        TenantSpec(name="acme", display_name="ACME", quotas=TenantQuotas(max_adapters=2))
    )
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    assert tenant.key_prefix == key[: len(tenant.key_prefix)] and len(tenant.key_prefix) < 12
    assert store.authenticate(key).name == "acme"
    assert store.get("acme").quotas.max_adapters == 2
    store.close()  # checkpoint-free: look at the database and its WAL as they are on disk
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key.encode() not in blob
    assert key[len(KEY_PREFIX) :].encode() not in blob
    assert hash_api_key(key).encode() in blob


def test_bad_keys_are_rejected_without_saying_why(store):
    store.create(TenantSpec(name="acme"))
    for bad in ["", "adept-", "adept-" + "x" * 43, "sk-123", "adept-" + "a" * 500, None]:
        with pytest.raises(AuthenticationError, match=r"^invalid API key$"):
            store.authenticate(bad)


def test_keys_differ_between_tenants_and_rotation_revokes(store):
    _, k1 = store.create(TenantSpec(name="acme"))
    _, k2 = store.create(TenantSpec(name="globex"))
    assert k1 != k2
    assert store.authenticate(k2).name == "globex"
    k3 = store.rotate_key("acme")
    with pytest.raises(AuthenticationError):
        store.authenticate(k1)
    assert store.authenticate(k3).name == "acme"


def test_duplicate_missing_and_bad_names(store):
    store.create(TenantSpec(name="acme"))
    with pytest.raises(Conflict, match="already exists"):
        store.create(TenantSpec(name="acme"))
    with pytest.raises(NotFound):
        store.get("nobody")
    with pytest.raises(NotFound):
        store.delete("nobody")
    with pytest.raises(NotFound):
        store.rotate_key("nobody")
    for bad in ["ACME", "-acme", "acme-", "a_b", "a/b", "../etc", "a" * 64, "", "admin"]:
        with pytest.raises(InvalidRequest):
            store.get(bad)
        with pytest.raises(ValueError):
            TenantSpec(name=bad)


def test_update_delete_and_deleted_key_stops_working(store):
    _, key = store.create(TenantSpec(name="acme"))
    t = store.update(
        TenantSpec(name="acme", display_name="Acme Inc", quotas=TenantQuotas(requests_per_minute=7))
    )
    assert (t.display_name, t.quotas.requests_per_minute) == ("Acme Inc", 7)
    assert store.authenticate(key).display_name == "Acme Inc"
    store.delete("acme")
    with pytest.raises(AuthenticationError):
        store.authenticate(key)
    assert store.list() == []


def test_survives_reopen(tmp_path):
    path = tmp_path / "t.sqlite"
    _, key = SQLiteTenantStore(path).create(TenantSpec(name="acme"))
    assert SQLiteTenantStore(path).authenticate(key).name == "acme"


def _create_many(path: str, prefix: str, n: int, out: mp.Queue) -> None:
    store = SQLiteTenantStore(path)
    keys = {}
    for i in range(n):
        name = f"{prefix}-{i}"
        keys[name] = store.create(TenantSpec(name=name))[1]
        if i % 5 == 0:
            store.rotate_key(name)
    out.put(keys)


def test_concurrent_writers_in_several_processes_and_threads(tmp_path):
    path = str(tmp_path / "t.sqlite")
    SQLiteTenantStore(path)  # schema
    ctx = mp.get_context("spawn")  # a clean interpreter per writer, like separate CLI invocations
    out = ctx.Queue()
    procs = [ctx.Process(target=_create_many, args=(path, f"p{j}", 20, out)) for j in range(3)]
    for p in procs:
        p.start()
    thread_q: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=_create_many, args=(path, f"t{j}", 20, thread_q)) for j in range(2)]
    for t in threads:
        t.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for t in threads:
        t.join()
    results += [thread_q.get() for _ in threads]
    store = SQLiteTenantStore(path)
    assert len(store.list()) == 100
    # Keys that were never rotated still authenticate to their own tenant.
    for keys in results:
        for name, key in keys.items():
            if int(name.rsplit("-", 1)[1]) % 5:
                assert store.authenticate(key).name == name


def test_concurrent_create_of_one_name_has_exactly_one_winner(tmp_path):
    path = tmp_path / "t.sqlite"
    SQLiteTenantStore(path)
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            SQLiteTenantStore(path).create(TenantSpec(name="race"))
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["created"]
