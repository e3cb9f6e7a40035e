"""The embedded platform is private by default, and two gateway replicas share one quota count.

One real platform (``adept up``'s ``start_platform``: local Ray, Serve, the tiny Phi-3) with two
gateway replicas. What a network neighbour could reach is read from the sockets the platform's
processes listen on (psutil), and each socket beyond loopback is called as a Ray client would:
without the token it must refuse, with the token it must answer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, free_port, start
from tests.ray_probe import authenticated, is_loopback, listeners, neighbour_address

pytestmark = pytest.mark.integration
RPM = 5


@pytest.fixture(scope="module")
def platform(tiny_phi3: Path, short_tmp: Path):
    from adept.config.serving import ServingConfig

    mp = pytest.MonkeyPatch()
    mp.setenv("ADEPT_ADMIN_KEY", ADMIN_KEY)
    # What a careless shell might carry: neither may weaken the platform's own Ray.
    mp.setenv("RAY_AUTH_MODE", "disabled")
    mp.setenv("RAY_AUTH_TOKEN", "a-stray-token-from-the-environment")
    root = Path(tempfile.mkdtemp(prefix="priv-", dir=short_tmp))
    config = ServingConfig.model_validate(
        {
            "platform": {"data_dir": str(root / "data"), "model": str(tiny_phi3), "device": "cpu"},
            "llm": {"max_tokens_limit": 16, "default_max_tokens": 4},
            "gateway": {"port": free_port()},
            "deployments": {"gateway": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1}}},
        }
    )
    p = start(config)
    try:
        yield p
    finally:
        p.stop()
        mp.undo()


def platform_processes(p) -> list[psutil.Process]:
    """This process (Ray's driver) and every Ray process of the platform's session (found by its temp dir)."""
    me = psutil.Process()
    ours = []
    for child in me.children(recursive=True):
        try:
            if str(p.ray_temp_dir) in " ".join(child.cmdline()):
                ours.append(child)
        except psutil.NoSuchProcess:
            continue
    found = {me.pid: me}
    for proc in ours:  # the raylet's workers (Serve replicas, agents) carry no temp dir in their cmdline
        found[proc.pid] = proc
        for sub in proc.children(recursive=True):
            found[sub.pid] = sub
    return list(found.values())


def test_ray_token_is_the_platforms_own_and_private(platform):
    token_file = platform.ray_token_file
    assert token_file == platform.config.platform.data_dir / "ray_auth_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert len(token_file.read_text().strip()) == 64
    gcs = next(p for p in platform_processes(platform) if "gcs_server" in " ".join(p.cmdline()))
    env = gcs.environ()
    # The stray RAY_AUTH_MODE=disabled and RAY_AUTH_TOKEN of the caller's shell did not get through.
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(token_file)
    assert "RAY_AUTH_TOKEN" not in env


def test_only_authenticated_ray_ports_listen_beyond_loopback(platform):
    found = listeners(platform_processes(platform))
    http_port = platform.config.gateway.port
    assert [(x.ip, x.port) for x in found if x.port == http_port] == [("127.0.0.1", http_port)]
    exposed = [x for x in found if not is_loopback(x.ip)]
    token = platform.ray_token_file.read_text().strip()
    host = neighbour_address()
    for x in exposed:
        ok, without, with_token = authenticated(host, x.port, token)
        assert ok, f"{x} answers without the Ray token: without={without} with={with_token}"
    # Ray's own servers (GCS, raylet, agents, dashboard) are on loopback: only replicas' gRPC is not.
    assert all("ServeReplica" in x.name for x in exposed), exposed


def test_an_unauthenticated_ray_client_is_refused(platform, tmp_path):
    import ray

    gcs = ray._private.worker.global_worker.node.gcs_address
    probe = f"import ray; ray.init(address={gcs!r}, log_to_driver=False); print('CONNECTED')"
    for name, extra in (
        ("no token", {"RAY_AUTH_MODE": "disabled"}),
        ("wrong token", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}),
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env.update(extra, HOME=str(tmp_path))  # no ~/.ray/auth_token to fall back on
        # ray.init retries a refused GCS connection 20 times, 1 s apart, before it gives up; the
        # refusal (InvalidAuthToken) is the same on every attempt, so two attempts show it.
        env["RAY_gcs_server_port_wait_time_s"] = "2"
        try:
            out = subprocess.run(
                [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            continue  # still knocking when given up on: refused
        assert "CONNECTED" not in out.stdout, f"a client with {name} joined the platform's Ray"
        assert out.returncode != 0 and "token" in out.stderr.lower(), out.stderr[-2000:]


def _gateway_log_counts(p) -> dict[str, int]:
    """Requests each gateway replica logged (Serve's per-replica access log)."""
    logs = p.ray_temp_dir / "session_latest" / "logs" / "serve"
    counts = {}
    for f in logs.glob("replica_*gateway*.log"):
        counts[f.name] = len(re.findall(r"GET /v1/models", f.read_text(errors="replace")))
    return counts


def test_a_quota_counts_once_across_two_gateway_replicas(platform):
    with httpx.Client(base_url=platform.url, timeout=60) as http:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        r = http.post(
            "/admin/tenants", headers=admin, json={"name": "metered", "quotas": {"requests_per_minute": RPM}}
        )
        assert r.status_code == 201, r.text
        key = {"Authorization": f"Bearer {r.json()['api_key']}"}
        statuses = [http.get("/v1/models", headers=key).status_code for _ in range(8 * RPM)]
    assert statuses.count(200) == RPM, statuses
    assert set(statuses) == {200, 429}
    # Both replicas answered some of them (else the test would prove nothing about sharing).
    deadline = time.monotonic() + 30
    while True:
        served = [n for n in _gateway_log_counts(platform).values() if n]
        if len(served) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(served) >= 2, _gateway_log_counts(platform)
