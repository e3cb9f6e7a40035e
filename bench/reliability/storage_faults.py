"""Disk full and read-only data dir, simulated in a child process, against the real stores.

Disk full: ``RLIMIT_FSIZE`` = 0 (writes that grow a file fail with EFBIG, as on a full disk).
Read-only: the data dir made 0555/0444 or, when we are root (root
ignores file modes), a read-only bind mount in a private mount namespace (``unshare -m``). Each write must fail with a clear ``StorageError`` naming the path,
and afterwards the data must be exactly what it was: same tenants, same adapter versions,
no half-written version visible, and writing works again once space is back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.reliability.report import Outcome

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, os, resource, signal, sys
from pathlib import Path
from adept.adapters import AdapterRegistry
from adept.config.tenant import TenantSpec
from adept.errors import AdeptError
from adept.tenancy import SQLiteTenantStore
from services.gateway.auth import load_or_create_admin_key

data, src, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
report = {"errors": {}}
registry = AdapterRegistry(str(data / "adapters"))
if mode == "disk-full":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
try:
    store = SQLiteTenantStore(data / "tenants.sqlite")
    store.list()
except AdeptError as e:  # a read-only dir without WAL files cannot even be opened: a clear error too
    store = None
    report["errors"]["open tenant store"] = [type(e).__name__, e.status, e.message]
if mode == "prepare":
    _, key = store.create(TenantSpec(name="keeper"))
    registry.publish("keeper", "base", src, {"base_model": "m"})
    print(json.dumps({"key": key}))
    sys.exit(0)
attempts = {
    "create tenant": lambda: store.create(TenantSpec(name="newcomer")),
    "rotate key": lambda: store.rotate_key("keeper"),
    "publish adapter": lambda: registry.publish("keeper", "base", src, {"base_model": "m"}),
    "publish new adapter": lambda: registry.publish("keeper", "other", src, {"base_model": "m"}),
    "pin version": lambda: registry.set_active("keeper", "base", "v1"),
    "create admin key": lambda: load_or_create_admin_key(data / "fresh-admin.key", "NO_SUCH_ENV_VAR"),
}
for name, fn in attempts.items():
    if store is None and name in ("create tenant", "rotate key"):
        continue
    try:
        fn()
        report["errors"][name] = None
    except AdeptError as e:
        report["errors"][name] = [type(e).__name__, e.status, e.message]
    except Exception as e:
        report["errors"][name] = ["UNEXPECTED " + type(e).__name__, 0, str(e)[:200]]
print(json.dumps(report))
"""


def _child(args: list[str], *, read_only: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", CHILD, *args]
    if read_only is not None:
        # Root ignores file modes: make the data dir a read-only bind mount in a private mount namespace.
        d = str(read_only)
        script = f'mount --bind "{d}" "{d}" && mount -o remount,bind,ro "{d}" && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", script, "sh", *cmd]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _state(data: Path) -> dict:
    from adept.adapters import AdapterRegistry
    from adept.tenancy import SQLiteTenantStore

    store = SQLiteTenantStore(data / "tenants.sqlite")
    try:
        tenants = [(t.name, t.key_prefix) for t in store.list()]
    finally:
        store.close()
    versions = [v.id for v in AdapterRegistry(str(data / "adapters")).list("keeper")]
    return {"tenants": tenants, "versions": versions}


def _chmod_tree(root: Path, writable: bool) -> None:
    for p in [root, *root.rglob("*")]:
        if p.is_dir():
            os.chmod(p, 0o755 if writable else 0o555)
        else:
            os.chmod(p, 0o644 if writable else 0o444)


def storage_faults(lora_src: Path, workdir: Path) -> Outcome:
    """Both simulations; every write refused clearly, nothing changed, writes work again afterwards."""
    out = Outcome("disk full / read-only data dir", load="sequential")
    started = time.monotonic()
    for mode in ("disk-full", "read-only"):
        data = workdir / mode
        data.mkdir(parents=True)
        _child([str(data), str(lora_src), "prepare"])
        before = _state(data)
        as_root = mode == "read-only" and os.geteuid() == 0
        if mode == "read-only" and not as_root:
            _chmod_tree(data, writable=False)
        try:
            report = _child([str(data), str(lora_src), mode], read_only=data if as_root else None)
        except RuntimeError as e:
            if (as_root and "unshare" in str(e)) or "mount" in str(e):
                out.details[mode] = f"not simulated here: {str(e)[-200:]}"
                continue
            raise
        finally:
            if mode == "read-only" and not as_root:
                _chmod_tree(data, writable=True)
        out.faults += 1
        for name, err in report["errors"].items():
            out.bad_inputs += 1
            if err is None:
                out.fail(f"{mode}: {name} succeeded although nothing can be written")
            elif err[0] != "StorageError" or err[1] != 507:
                out.fail(f"{mode}: {name}: expected a clear StorageError, got {err}")
        after = _state(data)
        if after != before:
            out.fail(f"{mode}: data changed: {before} -> {after}", lost=1)
        leftovers = [p.name for p in (data / "adapters").rglob(".tmp-*")]
        out.check(not leftovers, f"{mode}: temp dirs left behind: {leftovers}")
        # Space is back: the same writes work.
        from adept.adapters import AdapterRegistry

        v = AdapterRegistry(str(data / "adapters")).publish("keeper", "base", lora_src, {"base_model": "m"})
        out.check(v.version == "v2", f"{mode}: after recovery the next version is {v.version}, expected v2")
        out.details[mode] = report["errors"]
    out.seconds = time.monotonic() - started
    return out
