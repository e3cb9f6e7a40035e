"""Embedded mode: the whole platform on this machine — local Ray, Milvus Lite, the Serve application.

``start_platform(config)`` is what ``adept up`` and ``adept eval`` (without ``--url``) run. All
state lives in the data dir (tenants, documents, adapters, models, Ray's temp dir when its path
is short enough for unix sockets), so a second start finds everything again.

Private by default: Ray runs with token auth on and a token of its own (``<data_dir>/ray_auth_token``,
0600; ``adept.ray_auth``) and binds loopback, except each Serve replica's inter-deployment gRPC
server, which Ray binds on all interfaces and authenticates with that token; the HTTP port is on
127.0.0.1 unless ``gateway.host`` (``adept up --host``) says otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adept.config.serving import ServingConfig
from adept.errors import Unavailable
from adept.ray_auth import restore_env, token_path, use_local_cluster_env

log = logging.getLogger(__name__)

DEMO_TENANT = "demo"
DEMO_CORPUS = Path(__file__).resolve().parents[1] / "adept" / "demo" / "corpus"
# Ray puts sockets at <temp>/session_<date>_<pid>/sockets/plasma_store; unix socket paths max out at 107.
_MAX_RAY_TEMP_CHARS = 40
Say = Callable[[str], None]


@dataclass
class EmbeddedPlatform:
    """A running embedded platform. ``stop()`` shuts Serve and Ray down (idempotent)."""

    url: str
    admin_key: str
    admin_key_source: str
    config: ServingConfig
    ray_temp_dir: Path
    demo_key: str | None = None
    demo_key_file: Path | None = None
    run_file: Path | None = None
    ray_token_file: Path | None = None
    runner: Any = None  # the fine-tuning job runner (adept.finetuning.runner.JobRunner)
    _ray_env_before: dict[str, str | None] = field(default_factory=dict, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.run_file is not None:
            self.run_file.unlink(missing_ok=True)  # CLI commands go back to the data dir's stores
        try:
            if self.runner is not None:
                self.runner.stop()  # running jobs stop now and resume from a checkpoint at the next start
        finally:
            try:
                shutdown_ray()
            finally:
                restore_env(self._ray_env_before)

    def __enter__(self) -> EmbeddedPlatform:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def ray_temp_dir(config: ServingConfig) -> Path:
    """``<data_dir>/ray`` when short enough for Ray's unix sockets, else a short per-data-dir /tmp path."""
    preferred = config.platform.ray_temp_dir
    if len(str(preferred)) <= _MAX_RAY_TEMP_CHARS:
        return preferred
    digest = hashlib.sha256(str(config.platform.data_dir).encode()).hexdigest()[:10]
    return Path("/tmp") / f"adept-ray-{digest}"


def _wait_healthy(url: str, timeout_s: float, say: Say) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/healthz", timeout=10)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as e:
            last = str(e)
        time.sleep(0.5)
    raise Unavailable(f"the platform did not become healthy within {timeout_s:g} s: {last[:300]}")


def start_platform(
    config: ServingConfig,
    *,
    demo: bool = False,
    num_cpus: int | None = None,
    timeout_s: float = 900.0,
    say: Say | None = None,
    evaluator: Callable[[ServingConfig], Any] | None = None,
    build_app: Callable[[ServingConfig], Any] | None = None,
) -> EmbeddedPlatform:
    """Start local Ray and Serve, deploy ``build_app(config)``, wait until ``/healthz`` is 200.

    Args:
        config: The serving configuration (``platform.data_dir`` holds all state).
        demo: Also create (or reuse) tenant ``demo`` and ingest the bundled demo corpus.
        num_cpus: CPUs Ray may schedule on (default: all of this machine's).
        timeout_s: How long to wait for the application to become healthy.
        say: Progress callback (one line per step); default: the module logger.
        evaluator: Builds, once the application runs, the job runner's evaluator for eval-gated
            promotion (``tools.eval.promotion.serve_evaluator``); without it, a job naming an
            evaluation file publishes its version inactive, unmeasured.
        build_app: The Serve application's builder; default ``services.app.build_app``. ``adept up``
            passes the chart's (``tools.eval.serve_app.build_app``: the gateway with the evaluator
            behind ``POST /admin/tenants/{name}/evaluate``), so both modes serve the same routes.
    """
    from adept.admin_client import record_running
    from adept.models import resolve_model
    from services.gateway.auth import load_or_create_admin_key

    say = say or log.info
    data_dir = config.platform.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    admin_key, source = load_or_create_admin_key(config.admin_key_path, config.gateway.admin_key_env)
    # Convert the bundled model here, once, with a visible step, rather than silently inside a replica.
    say(f"preparing model {config.platform.model}")
    resolve_model(config.platform.model, config.platform.models_dir)

    _check_port_free(config.gateway.host, config.gateway.port)
    cpus = num_cpus or os.cpu_count() or 1
    for line in check_replicas_fit(config, cpus):
        say(line)
    temp = ray_temp_dir(config)
    temp.mkdir(parents=True, exist_ok=True)
    # Before Ray is imported here: it reads the loopback switch at import (adept.ray_auth).
    env_before = use_local_cluster_env(data_dir)
    import ray
    from ray import serve

    if build_app is None:
        from services.app import build_app

    if ray.is_initialized():
        restore_env(env_before)
        raise Unavailable("Ray is already initialized in this process; stop it before starting the platform")
    say(f"starting Ray (temp dir {temp}; token auth, token in {token_path(data_dir)})")
    host, port = config.gateway.host, config.gateway.port
    platform: EmbeddedPlatform | None = None
    try:
        _init_local_ray(cpus, temp, say)
        serve.start(http_options={"host": host, "port": port}, detached=False)
        say("deploying the Serve application (gateway, LLM replica, retrieval)")
        try:
            serve.run(build_app(config), name=config.app_name, route_prefix="/")
        except RuntimeError as e:
            logs = temp / "session_latest" / "logs" / "serve"
            raise Unavailable(f"{e} (replica logs: {logs})") from None
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        platform = EmbeddedPlatform(url, admin_key, source, config, temp)
        platform.ray_token_file, platform._ray_env_before = token_path(data_dir), env_before
        _wait_healthy(url, timeout_s, say)
        platform.runner = start_job_runner(
            config,
            ray.get_runtime_context().gcs_address,
            say,
            evaluator=evaluator(config) if evaluator is not None else None,
        )
        # From now on CLI commands on this data dir go through this platform's admin API.
        platform.run_file = record_running(data_dir, url, config.admin_key_path)
        if demo:
            _start_demo(platform, say)
        return platform
    except BaseException:
        if platform is not None:
            platform.stop()
        else:
            try:
                shutdown_ray()
            finally:
                restore_env(env_before)
        raise


def check_replicas_fit(config: ServingConfig, cpus: float) -> list[str]:
    """Warnings when the deployments at their most replicas reserve more CPUs than this machine's Ray has.

    Raises ``ConfigError`` when even the fewest replicas do not fit (the application would never
    become healthy); beyond that, replicas the autoscaler asks for would wait unscheduled, so say
    how many LLM replicas actually fit.
    """
    from adept.errors import ConfigError

    deployments = config.deployments
    parts = {name: getattr(deployments, name) for name in ("gateway", "llm", "retrieval")}

    def reserved(replicas: dict[str, int]) -> float:
        return sum(parts[n].ray_actor_options.num_cpus * k for n, k in replicas.items())

    def fewest(d: Any) -> int:
        a = d.autoscaling_config
        return (d.num_replicas or 1) if a is None else max(a.min_replicas, a.initial_replicas or 0, 1)

    low = reserved({n: fewest(d) for n, d in parts.items()})
    if low > cpus:
        raise ConfigError(
            f"the deployments' fewest replicas reserve {low:g} CPUs but Ray has {cpus:g}: lower "
            "deployments.*.ray_actor_options.num_cpus or min_replicas"
        )
    high = reserved({n: d.max_replicas for n, d in parts.items()})
    if high <= cpus:
        return []
    llm = parts["llm"]
    per = llm.ray_actor_options.num_cpus
    others = reserved({n: parts[n].max_replicas for n in ("gateway", "retrieval")})
    fit = llm.max_replicas if per == 0 else int((cpus - others) // per)
    return [
        f"warning: at their most replicas the deployments reserve {high:g} CPUs but Ray has {cpus:g}; "
        f"{max(fit, 1)} of {llm.max_replicas} LLM replicas fit (lower deployments.llm.ray_actor_options.num_cpus "
        "to run more)"
    ]


def start_job_runner(
    config: ServingConfig, ray_address: str | None, say: Say, *, evaluator: Any = None
) -> Any:
    """The runner that trains tenants' fine-tuning jobs on this machine's Ray (None when fine-tuning is off).

    It lives in this process, not in a Serve replica: a gateway restart leaves jobs alone, and
    the jobs stop (to resume later) only when the platform itself stops.
    """
    if not config.finetuning.enabled or config.platform.tenant_store != "sqlite":
        return None  # with Kubernetes stores, jobs are FineTuneJob resources: the operator runs them
    from adept.finetuning.runner import JobRunner
    from adept.finetuning.service import open_fine_tuning
    from adept.platform import Platform

    owner = open_fine_tuning(
        Platform(config.platform), config.finetuning, ray_address=ray_address, evaluator=evaluator
    )
    runner = JobRunner(owner).start()
    unfinished = len(owner.jobs.active())
    say(
        "fine-tuning job runner started"
        + (f" ({unfinished} unfinished jobs to pick up)" if unfinished else "")
    )
    return runner


def _check_port_free(host: str, port: int) -> None:
    """Fail now if something listens on the port: otherwise the health check would find *that* server."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # Lingering TIME_WAIT connections of a previous run are fine; a listening server is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise Unavailable(
                f"cannot listen on {host}:{port}: {e.strerror or e} (another `adept up`? choose one with --port)"
            ) from None


# What ray.init raises when its local GCS or raylet did not come up within Ray's own (fixed, 30 s)
# windows: seen on a loaded 2-core machine starting its tenth cluster in one process.
_RAY_STARTUP_TIMEOUTS = ("timed out during startup", "Timed out waiting for", "gcs_server_port")


def _init_local_ray(cpus: int, temp: Path, say: Say, attempts: int = 2) -> None:
    """Start this process's local Ray; a start that timed out is shut down and tried once more.

    Ray waits a fixed 30 s for its raylet to register; a busy laptop can miss that once and then
    start fine. The failed session's logs stay under ``temp`` (named in the message).
    """
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                _temp_dir=str(temp),
                object_store_memory=512 * 1024 * 1024,
                log_to_driver=False,
                configure_logging=False,
            )
            return
        except Exception as e:
            if attempt == attempts or not any(t in str(e) for t in _RAY_STARTUP_TIMEOUTS):
                raise
            logs = (temp / "session_latest" / "logs").resolve()
            say(f"Ray did not start in time ({e}); logs of that try: {logs}; trying once more")
            log.warning("local Ray start timed out (%s); logs: %s; retrying", e, logs)
            ray.shutdown()


def shutdown_ray() -> None:
    """Shut Serve, then Ray down in this process; Ray goes down even when Serve cannot."""
    import ray
    from ray import serve
    from ray.exceptions import RayError

    try:
        serve.shutdown()  # copes by itself with "nothing running" and an unreachable controller
    except RayError as e:
        log.warning("Serve did not shut down cleanly (%s); shutting Ray down anyway", e)
    finally:
        ray.shutdown()


def _start_demo(platform: EmbeddedPlatform, say: Say) -> None:
    """Create tenant ``demo`` (or reuse it, key from ``<data_dir>/demo.key``) and ingest the demo corpus."""
    import asyncio

    from ray import serve

    from adept.admin_client import AdminClient
    from adept.errors import NotFound

    cfg = platform.config
    key_file = cfg.platform.data_dir / "demo.key"
    with AdminClient(platform.url, platform.admin_key) as admin:
        try:
            admin.get_tenant(DEMO_TENANT)
            key = key_file.read_text(encoding="utf-8").strip() if key_file.is_file() else ""
            if not key:  # the key was never written here (or removed): issue a new one
                key = admin.rotate_key(DEMO_TENANT)
                _write_secret(key_file, key)
            say(f"reusing tenant '{DEMO_TENANT}'")
        except NotFound:
            key = admin.create_tenant({"name": DEMO_TENANT, "display_name": "Lumen Grid Co. (demo)"})[
                "api_key"
            ]
            _write_secret(key_file, key)
            say(f"created tenant '{DEMO_TENANT}'")
    platform.demo_key, platform.demo_key_file = key, key_file
    if not DEMO_CORPUS.is_dir() or not any(DEMO_CORPUS.iterdir()):
        log.warning(
            "demo corpus %s not found: the demo tenant starts with an empty knowledge base", DEMO_CORPUS
        )
        return
    say(f"ingesting the demo corpus ({DEMO_CORPUS})")
    handle = serve.get_deployment_handle("retrieval", app_name=cfg.app_name)

    async def ingest() -> object:
        return await handle.ingest_paths.remote(DEMO_TENANT, [str(DEMO_CORPUS)])

    try:
        result = asyncio.run(ingest())
    except Exception as e:
        from services.gateway.backends import as_adept_error

        raise as_adept_error(e, "retrieval deployment") from None
    docs = getattr(result, "documents", [])
    errors = getattr(result, "errors", [])
    say(f"demo knowledge base: {len(docs)} documents" + (f", {len(errors)} skipped" if errors else ""))


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (the file is created 0600, never widened)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # replaced below, created 0600 from scratch (O_EXCL)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as e:
        from adept.errors import StorageError

        raise StorageError(f"cannot write {path}: {e.strerror or e}") from None
