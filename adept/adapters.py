"""The adapter registry: versioned PEFT adapters per tenant, in a directory or an object store.

Layout under the store URI (a local directory, or any fsspec URI such as ``s3://bucket/prefix``)::

    <store>/<tenant>/<adapter>/<version>/adapter_config.json
                                         adapter_model.safetensors
                                         manifest.json
                                         _COMPLETE        <- written last; readers require it
    <store>/<tenant>/<adapter>/active                    <- optional pinned version ("v3")

Publishing never exposes a half-written version: locally the version is assembled in a temp
directory beside its final place and renamed into place (``os.rename`` is atomic and refuses
a non-empty target, which also settles concurrent publishers); on object stores, which cannot
rename, the ``_COMPLETE`` marker is uploaded last and versions without it are invisible.
A version directory is standard PEFT: ``PeftModel.from_pretrained(base, path)`` loads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from adept.config.adapter import VERSION_RE, AdapterEvaluation, AdapterManifest, check_adapter_name
from adept.config.base import validate
from adept.config.tenant import check_tenant_name
from adept.errors import AdeptError, Conflict, InvalidRequest, NotFound, StorageError, Unavailable

if TYPE_CHECKING:
    from adept.config.platform import PlatformConfig

log = logging.getLogger(__name__)

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
MANIFEST_FILE = "manifest.json"
ACTIVE_FILE = "active"
MARKER_FILE = "_COMPLETE"
_PLAIN_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


def parse_adapter_id(adapter_id: str) -> tuple[str, str, str | None]:
    """``"acme/legal@v3"`` -> ``("acme", "legal", "v3")``; the version is optional.

    Raises:
        InvalidRequest: the id is malformed or a part is not a valid name.
    """
    ref, at, version = str(adapter_id).partition("@")
    tenant, slash, name = ref.partition("/")
    if not slash or not tenant or not name or (at and not version):
        raise InvalidRequest(
            f"invalid adapter id {adapter_id!r}: expected <tenant>/<adapter>[@v<N>]", param="model"
        )
    _check(tenant, name, version or None)
    return tenant, name, version or None


def _check(tenant: str, name: str | None = None, version: str | None = None) -> None:
    """Validate names before they become path parts: this is what keeps ``..`` and ``/`` out."""
    try:
        check_tenant_name(tenant)
        if name is not None:
            check_adapter_name(name)
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    if version is not None and not VERSION_RE.fullmatch(version):
        raise InvalidRequest(f"invalid adapter version {version!r}: expected v<N> (v1, v2, ...)")


def _version_number(version: str) -> int:
    return int(version[1:])


def _canonical(ref: str) -> str:
    # Compare ids as adept.models canonicalizes them; a ref it cannot resolve compares as written.
    try:
        from adept.models import canonical_model_id

        return canonical_model_id(ref)
    except (ImportError, AdeptError, ValueError, OSError):
        return ref


def check_base_model(adapter: str, trained_on: str, serving: str) -> None:
    """The base-model policy: an adapter serves only on the base model it was trained on.

    Raises:
        Conflict: ``trained_on`` and ``serving`` name different models (``base_model_mismatch``).
    """
    if _canonical(trained_on) != _canonical(serving):
        raise Conflict(
            f"adapter {adapter} was trained on base model {trained_on!r}, but the serving base "
            f"model is {serving!r}; retrain it on {serving!r} or serve {trained_on!r}",
            code="base_model_mismatch",
        )


@dataclass(frozen=True)
class AdapterVersion:
    """One published version. ``path`` is a local directory with the PEFT files.

    For remote stores, ``resolve`` downloads into ``path``; ``list`` only names where it would go.
    """

    tenant: str
    name: str
    version: str
    path: Path
    manifest: AdapterManifest
    uri: str = ""

    @property
    def id(self) -> str:
        return f"{self.tenant}/{self.name}@{self.version}"


class AdapterRegistry:
    """Publish, resolve, list and delete tenants' adapters under one store URI.

    Resolution is cached for ``resolve_ttl_s`` (found and not-found alike, so a flood of requests
    for absent names costs the store nothing); this process's own writes drop the cached entries
    at once, other processes' writes are seen within the TTL.

    Args:
        store_uri: a local directory (or ``file://``) or an fsspec URI (``s3://bucket/prefix``).
        cache_dir: where remote versions are downloaded (default ``~/.cache/adept/adapters``).
        resolve_ttl_s: how long a resolution is reused (0 disables the cache).
    """

    def __init__(self, store_uri: str, *, cache_dir: Path | None = None, resolve_ttl_s: float = 2.0) -> None:
        self.store_uri = str(store_uri)
        self.resolve_ttl_s = resolve_ttl_s
        self._resolved: dict[tuple[str, str, str | None], tuple[float, AdapterVersion | NotFound]] = {}
        self._resolved_lock = threading.Lock()
        self._store: Store
        if "://" not in self.store_uri or self.store_uri.startswith("file://"):
            self._store = LocalStore(Path(self.store_uri.removeprefix("file://")).expanduser().absolute())
        else:
            cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "adept" / "adapters"
            self._store = RemoteStore(self.store_uri, cache)

    # -- reading ---------------------------------------------------------------------------
    def versions(self, tenant: str, name: str) -> list[str]:
        """Complete versions of ``tenant/name``, oldest first (``[]`` if none)."""
        _check(tenant, name)
        names = [v for v in self._store.listdir(f"{tenant}/{name}") if VERSION_RE.fullmatch(v)]
        done = [v for v in names if self._store.is_complete(f"{tenant}/{name}/{v}")]
        return sorted(done, key=_version_number)

    def active_version(self, tenant: str, name: str) -> str | None:
        """The pinned version, if one is set and still exists."""
        _check(tenant, name)
        pinned = (self._store.read_text(f"{tenant}/{name}/{ACTIVE_FILE}") or "").strip()
        return pinned if pinned and pinned in self.versions(tenant, name) else None

    def _manifest(self, rel: str) -> AdapterManifest:
        try:
            text = self._store.read_text(f"{rel}/{MANIFEST_FILE}")
            if text is None:
                raise NotFound(f"adapter {rel} has no manifest")
            return AdapterManifest.model_validate(json.loads(text))
        except (ValueError, UnicodeDecodeError) as e:  # pydantic's ValidationError is a ValueError
            # A damaged file in the store must be that adapter's clear error, not a 500 for its tenant.
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise Unavailable(
                f"adapter {rel} is damaged in the adapter store ({MANIFEST_FILE} is unreadable: {reason}); "
                "publish it again",
                code="adapter_damaged",
            ) from None

    def _version(self, tenant: str, name: str, version: str, *, fetch: bool) -> AdapterVersion:
        rel = f"{tenant}/{name}/{version}"
        path = self._store.local_dir(rel) if fetch else self._store.local_path(rel)
        return AdapterVersion(tenant, name, version, path, self._manifest(rel), self._store.uri(rel))

    def resolve(
        self, tenant: str, name: str, version: str | None = None, *, fetch: bool = True
    ) -> AdapterVersion:
        """The requested version, else the active one, else the latest.

        Args:
            fetch: make ``path`` a local copy of the files (downloads from a remote store); with
                False only the manifest is read: what naming and listing need.

        Raises:
            NotFound: no such adapter (or version) for this tenant. The message names only the
                requested id, so it never reveals what other tenants own.
        """
        _check(tenant, name, version)
        key = (tenant, name, version)
        now = time.monotonic()
        with self._resolved_lock:
            hit = self._resolved.get(key)
        if hit is None or hit[0] <= now:
            hit = (now + self.resolve_ttl_s, self._lookup(tenant, name, version))
            if self.resolve_ttl_s > 0:
                with self._resolved_lock:
                    self._resolved[key] = hit
        found = hit[1]
        if isinstance(found, NotFound):
            raise NotFound(found.message, code=found.code)
        if fetch and found.path != (local := self._store.local_dir(f"{tenant}/{name}/{found.version}")):
            found = dataclasses.replace(found, path=local)
        return found

    def _lookup(self, tenant: str, name: str, version: str | None) -> AdapterVersion | NotFound:
        versions = self.versions(tenant, name)
        if not versions or (version is not None and version not in versions):
            return NotFound(
                f"adapter {tenant}/{name}{'@' + version if version else ''} not found", code="model_not_found"
            )
        chosen = version or self.active_version(tenant, name) or versions[-1]
        return self._version(tenant, name, chosen, fetch=False)

    def _forget(self, tenant: str, name: str | None = None) -> None:
        """Drop cached resolutions after a write by this process."""
        with self._resolved_lock:
            for key in [k for k in self._resolved if k[0] == tenant and name in (None, k[1])]:
                del self._resolved[key]

    def list(self, tenant: str) -> list[AdapterVersion]:
        """Every complete version of every adapter of ``tenant``, by name then version."""
        _check(tenant)
        out = []
        for name in sorted(self._store.listdir(tenant)):
            try:
                check_adapter_name(name)
            except ValueError:
                continue  # temp/trash entries and foreign files
            for v in self.versions(tenant, name):
                try:
                    out.append(self._version(tenant, name, v, fetch=False))
                except Unavailable as e:
                    log.warning("skipping %s", e.message)  # one damaged version must not hide the rest
        return out

    def count_adapters(self, tenant: str) -> int:
        """Adapter names (not versions) the tenant owns: what ``TenantQuotas.max_adapters`` limits."""
        return len({v.name for v in self.list(tenant)})

    # -- writing ---------------------------------------------------------------------------
    def publish(
        self,
        tenant: str,
        name: str,
        src_dir: str | Path,
        manifest: AdapterManifest | dict[str, Any],
        *,
        expected_base_model: str | None = None,
        extra_files: dict[str, str | Path] | None = None,
    ) -> AdapterVersion:
        """Publish the PEFT adapter in ``src_dir`` as the next version of ``tenant/name``.

        ``extra_files`` (``{"loss_curve.png": path, ...}``) are published in the same atomic step,
        so a reader never sees a version without them.

        Raises:
            InvalidRequest: bad names, ``src_dir`` lacks the PEFT files, or a bad extra file name.
            Conflict: the manifest's base model is not ``expected_base_model``.
        """
        _check(tenant, name)
        src = Path(src_dir)
        missing = [f for f in PEFT_FILES if not (src / f).is_file()]
        if missing:
            raise InvalidRequest(f"{src} is not a PEFT adapter directory: missing {', '.join(missing)}")
        try:
            peft_cfg = json.loads((src / PEFT_FILES[0]).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"{src / PEFT_FILES[0]}: not valid JSON: {e}") from None
        if not isinstance(peft_cfg, dict):
            raise InvalidRequest(f"{src / PEFT_FILES[0]}: expected a JSON object")
        data = manifest.model_dump() if isinstance(manifest, AdapterManifest) else dict(manifest)
        data.update(tenant=tenant, name=name, version="")
        # Fill LoRA facts from the adapter itself when the manifest does not state them.
        data.setdefault("base_model", peft_cfg.get("base_model_name_or_path"))
        if data.get("rank") is None:
            data["rank"] = peft_cfg.get("r")
        if data.get("alpha") is None:
            data["alpha"] = peft_cfg.get("lora_alpha")
        if not data.get("target_modules") and isinstance(peft_cfg.get("target_modules"), list):
            data["target_modules"] = peft_cfg["target_modules"]
        man = validate(AdapterManifest, data, source="adapter manifest")
        if expected_base_model is not None:
            check_base_model(f"{tenant}/{name}", man.base_model, expected_base_model)

        rel = f"{tenant}/{name}"
        # `.last` remembers numbers of deleted versions, so a version id is never reused for other weights.
        taken = [*self._store.listdir(rel), (self._store.read_text(f"{rel}/.last") or "").strip()]
        start = max((_version_number(v) for v in taken if VERSION_RE.fullmatch(v)), default=0)

        def render(version: str) -> bytes:
            return man.model_copy(update={"version": version}).model_dump_json(indent=2).encode()

        files = {f: src / f for f in PEFT_FILES}
        for fname, path in (extra_files or {}).items():
            if (
                fname in files
                or fname in (MANIFEST_FILE, MARKER_FILE, ACTIVE_FILE)
                or not _PLAIN_FILE.fullmatch(fname)
            ):
                raise InvalidRequest(f"extra adapter file name {fname!r} is not allowed")
            if not Path(path).is_file():
                raise InvalidRequest(f"extra adapter file not found: {path}")
            files[fname] = Path(path)
        version = self._store.publish(rel, files, render, first=start + 1)
        self._store.write_text(f"{rel}/.last", version)
        self._forget(tenant, name)
        log.info("published adapter %s/%s@%s", tenant, name, version)
        return self._version(tenant, name, version, fetch=False)

    def set_active(self, tenant: str, name: str, version: str | None) -> None:
        """Pin ``version`` as what ``resolve(tenant, name)`` returns; ``None`` unpins (latest wins)."""
        _check(tenant, name, version)
        try:
            if version is None:
                self._store.remove(f"{tenant}/{name}/{ACTIVE_FILE}")
                return
            if version not in self.versions(tenant, name):
                raise NotFound(f"adapter {tenant}/{name}@{version} not found")
            self._store.write_text(f"{tenant}/{name}/{ACTIVE_FILE}", version)
        finally:
            self._forget(tenant, name)

    def record_evaluation(
        self, tenant: str, name: str, version: str, evaluation: AdapterEvaluation
    ) -> AdapterVersion:
        """Store how ``version`` measured in its manifest (the PEFT files are untouched)."""
        _check(tenant, name, version)
        if version not in self.versions(tenant, name):
            raise NotFound(f"adapter {tenant}/{name}@{version} not found")
        rel = f"{tenant}/{name}/{version}"
        manifest = self._manifest(rel).model_copy(update={"evaluation": evaluation})
        try:
            self._store.write_text(f"{rel}/{MANIFEST_FILE}", manifest.model_dump_json(indent=2))
        finally:
            self._forget(tenant, name)
        return self._version(tenant, name, version, fetch=False)

    def delete(self, tenant: str, name: str, version: str | None = None) -> None:
        """Delete one version, or the whole adapter when ``version`` is None (unpins a deleted pin)."""
        _check(tenant, name, version)
        rel = f"{tenant}/{name}" + (f"/{version}" if version else "")
        if version is None and not self._store.listdir(rel):
            raise NotFound(f"adapter {tenant}/{name} not found")
        if version is not None and version not in self.versions(tenant, name):
            raise NotFound(f"adapter {tenant}/{name}@{version} not found")
        if version is not None and self.active_version(tenant, name) == version:
            self._store.remove(f"{tenant}/{name}/{ACTIVE_FILE}")
        try:
            self._store.remove_tree(rel)
        finally:
            self._forget(tenant, name)

    def delete_tenant(self, tenant: str) -> None:
        """Delete every adapter of ``tenant`` (idempotent)."""
        _check(tenant)
        try:
            self._store.remove_tree(tenant)
        finally:
            self._forget(tenant)


def open_adapter_registry(cfg: PlatformConfig) -> AdapterRegistry:
    """The registry for this installation (default ``<data_dir>/adapters``, cache in the data dir)."""
    return AdapterRegistry(cfg.resolved_adapter_store, cache_dir=cfg.data_dir / "cache" / "adapters")


# -- storage backends --------------------------------------------------------------------------
# Paths inside a store are "/"-joined relative paths built only from validated names.


class Store(Protocol):
    """What the registry needs from a storage backend."""

    def listdir(self, rel: str) -> list[str]: ...
    def is_complete(self, rel: str) -> bool: ...
    def read_text(self, rel: str) -> str | None: ...
    def write_text(self, rel: str, text: str) -> None: ...
    def remove(self, rel: str) -> None: ...
    def remove_tree(self, rel: str) -> None: ...
    def local_path(self, rel: str) -> Path: ...
    def local_dir(self, rel: str) -> Path: ...
    def uri(self, rel: str) -> str: ...
    def publish(
        self, rel: str, files: dict[str, Path], render: Callable[[str], bytes], *, first: int
    ) -> str: ...


def _storage_error(where: object, e: OSError) -> StorageError:
    return StorageError(f"adapter store {where}: {e.strerror or e}")


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class LocalStore:
    """A directory on a local or mounted (NFS, PVC) filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(self.root / rel)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def is_complete(self, rel: str) -> bool:
        return (self.root / rel / MARKER_FILE).is_file()

    def read_text(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write_text(self, rel: str, text: str) -> None:
        path = self.root / rel
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_durable(tmp, text.encode("utf-8"))
            os.replace(tmp, path)
        except OSError as e:
            # On a read-only filesystem even unlinking a missing file fails (EROFS): keep the first error.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _storage_error(path, e) from None

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def remove_tree(self, rel: str) -> None:
        path = self.root / rel
        # Rename first: readers see the whole tree vanish at once, never a half-deleted version.
        trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        except OSError as e:
            raise _storage_error(path, e) from None
        shutil.rmtree(trash, ignore_errors=True)

    def local_path(self, rel: str) -> Path:
        return self.root / rel

    local_dir = local_path

    def uri(self, rel: str) -> str:
        return str(self.root / rel)

    def publish(self, rel: str, files: dict[str, Path], render: Callable[[str], bytes], *, first: int) -> str:
        parent = self.root / rel
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
        except OSError as e:
            raise _storage_error(parent, e) from None
        try:
            for fname, src in files.items():
                shutil.copyfile(src, tmp / fname)
                with open(tmp / fname, "rb+") as f:
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o755)
            n = first
            while True:
                version = f"v{n}"
                _write_durable(tmp / MANIFEST_FILE, render(version))
                _write_durable(tmp / MARKER_FILE, b"")
                try:
                    # Atomic, and refuses a non-empty target: a concurrent publisher that took vN wins.
                    os.rename(tmp, parent / version)
                    return version
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    n += 1
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _storage_error(parent, e) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class RemoteStore:
    """Any fsspec filesystem (``s3://``, ``gs://``, ``memory://``); versions are downloaded to a cache."""

    def __init__(self, uri: str, cache_dir: Path) -> None:
        import fsspec  # only remote stores need it

        self.fs, root = fsspec.core.url_to_fs(uri)
        self.root = root.rstrip("/")
        self.base_uri = uri.rstrip("/")
        self.cache_dir = cache_dir

    def _p(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def listdir(self, rel: str) -> list[str]:
        path = self._p(rel)
        self.fs.invalidate_cache(path)  # listings are cached by some filesystems (s3fs)
        try:
            return [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def is_complete(self, rel: str) -> bool:
        return bool(self.fs.exists(self._p(f"{rel}/{MARKER_FILE}")))

    def read_text(self, rel: str) -> str | None:
        try:
            return self.fs.cat_file(self._p(rel)).decode("utf-8")
        except (FileNotFoundError, IsADirectoryError):
            return None

    def write_text(self, rel: str, text: str) -> None:
        try:
            self.fs.pipe_file(self._p(rel), text.encode("utf-8"))  # one object PUT is atomic
        except OSError as e:
            raise _storage_error(self.uri(rel), e) from None

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm_file(self._p(rel))
        except FileNotFoundError:
            pass

    def remove_tree(self, rel: str) -> None:
        path = self._p(rel)
        if not self.fs.exists(path):
            return
        # Markers first: every version stops being visible before any of its files go.
        for f in self.fs.find(path):
            if f.rsplit("/", 1)[-1] == MARKER_FILE:
                self.fs.rm_file(f)
        self.fs.rm(path, recursive=True)

    def local_path(self, rel: str) -> Path:
        return self.cache_dir / rel

    def local_dir(self, rel: str) -> Path:
        """Download the version into the cache unless an identical copy is there already."""
        dest = self.local_path(rel)
        manifest = self.read_text(f"{rel}/{MANIFEST_FILE}")
        cached = dest / MANIFEST_FILE
        if (
            (dest / MARKER_FILE).is_file()
            and cached.is_file()
            and cached.read_text(encoding="utf-8") == manifest
        ):
            return dest
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
            for f in self.fs.ls(self._p(rel), detail=False):
                self.fs.get_file(f, str(tmp / f.rstrip("/").rsplit("/", 1)[-1]))
            if dest.exists():  # stale copy of a deleted-and-republished version
                LocalStore(dest.parent).remove_tree(dest.name)
            try:
                os.rename(tmp, dest)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process downloaded it first
        except OSError as e:
            raise _storage_error(dest, e) from None
        return dest

    def uri(self, rel: str) -> str:
        return f"{self.base_uri}/{rel}"

    def publish(self, rel: str, files: dict[str, Path], render: Callable[[str], bytes], *, first: int) -> str:
        n = first
        while self.fs.exists(self._p(f"{rel}/v{n}")):
            n += 1
        version, dest = f"v{n}", self._p(f"{rel}/v{n}")
        try:
            for fname, src in files.items():
                self.fs.put_file(str(src), f"{dest}/{fname}")
            self.fs.pipe_file(f"{dest}/{MANIFEST_FILE}", render(version))
            self.fs.pipe_file(f"{dest}/{MARKER_FILE}", b"")  # last: the version becomes visible here
        except OSError as e:
            raise _storage_error(self.uri(f"{rel}/{version}"), e) from None
        return version
