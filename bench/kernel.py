"""Kernel hot paths: tenant authentication and adapter resolution, each against a named baseline.

Every chat request authenticates its API key and resolves its adapter id, so both must cost
far less than a token. Baselines: a plain in-memory ``dict`` lookup of the key's sha256 (what
a cache in front of the store would cost) and reading the manifest JSON directly.

    python bench/kernel.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Figure, Run, median, percentile, print_table


def timed(fn, n: int) -> list[float]:
    """Per-call latencies in microseconds."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args()
    run = Run("kernel", args)
    n_tenants, n_calls, n_adapters = (50, 500, 10) if args.quick else (1000, 5000, 100)

    from adept.adapters import AdapterRegistry
    from adept.config.tenant import TenantSpec
    from adept.tenancy import SQLiteTenantStore, hash_api_key

    with tempfile.TemporaryDirectory(prefix="adept-bench-") as tmp:
        root = Path(tmp)
        store = SQLiteTenantStore(root / "tenants.sqlite")
        keys = [store.create(TenantSpec(name=f"t{i}"))[1] for i in range(n_tenants)]
        by_hash = {hash_api_key(k): f"t{i}" for i, k in enumerate(keys)}
        auth = timed(lambda i: store.authenticate(keys[i % n_tenants]), n_calls)
        dict_auth = timed(lambda i: by_hash[hash_api_key(keys[i % n_tenants])], n_calls)

        src = root / "src"
        src.mkdir()
        (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
        (src / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
        registry = AdapterRegistry(str(root / "adapters"))
        t0 = time.perf_counter()
        for i in range(n_adapters):
            registry.publish(f"t{i % n_tenants}", f"a{i}", src, {"base_model": "m"})
        publish_ms = (time.perf_counter() - t0) * 1e3 / n_adapters
        resolve = timed(
            lambda i: registry.resolve(f"t{i % n_adapters % n_tenants}", f"a{i % n_adapters}"), n_calls
        )
        manifests = [
            root / "adapters" / f"t{i % n_tenants}" / f"a{i}" / "v1" / "manifest.json"
            for i in range(n_adapters)
        ]
        read_json = timed(lambda i: json.loads(manifests[i % n_adapters].read_text()), n_calls)

    rows = [
        ("authenticate (SQLite store)", median(auth), percentile(auth, 99)),
        ("baseline: dict lookup of sha256", median(dict_auth), percentile(dict_auth, 99)),
        ("resolve adapter (registry)", median(resolve), percentile(resolve, 99)),
        ("baseline: read manifest.json", median(read_json), percentile(read_json, 99)),
    ]
    auth_ratio = median(auth) / median(dict_auth)
    resolve_ratio = median(resolve) / median(read_json)
    print_table(
        f"kernel hot paths ({n_tenants} tenants, {n_adapters} adapters, {n_calls} calls)",
        ["path", "median µs", "p99 µs"],
        rows,
    )
    print(
        f"authenticate / dict baseline: {auth_ratio:.1f}x   resolve / manifest read: {resolve_ratio:.1f}x   "
        f"publish: {publish_ms:.2f} ms/version"
    )
    sizes = f"{n_tenants} tenants, {n_adapters} adapters"
    figures = [
        Figure(f"authenticate an API key, median ({sizes})", median(auth), "µs",
               "dict lookup of the key's sha256", median(dict_auth), higher_is_better=False,
               note=f"p99 {percentile(auth, 99):.0f} µs vs {percentile(dict_auth, 99):.0f} µs"),
        Figure(f"resolve an adapter, median ({sizes})", median(resolve), "µs",
               "read manifest.json", median(read_json), higher_is_better=False,
               note=f"p99 {percentile(resolve, 99):.0f} µs vs {percentile(read_json, 99):.0f} µs; "
               f"publish {publish_ms:.2f} ms/version"),
    ]  # fmt: skip
    run.write(
        figures,
        dtype=None,  # no tensors: pure Python, SQLite and file reads
        details={
            "sizes": {"tenants": n_tenants, "adapters": n_adapters, "calls": n_calls},
            "median_us": {r[0]: r[1] for r in rows},
            "p99_us": {r[0]: r[2] for r in rows},
            "ratios": {"authenticate_vs_dict": auth_ratio, "resolve_vs_manifest_read": resolve_ratio},
            "publish_ms_per_version": publish_ms,
        },
    )


if __name__ == "__main__":
    main()
