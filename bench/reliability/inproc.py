"""The gateway's real FastAPI app with real backends, in one process, served over loopback HTTP.

Everything is the production code path except Ray Serve: the LLM is the real ``Engine`` with
the real ``AdapterLoader`` (what ``LLMDeployment`` wraps), retrieval is the real
``KnowledgeBase`` on Milvus Lite (what ``RetrievalDeployment`` wraps), tenants live in the real
SQLite store and adapters in the real registry. uvicorn serves it on 127.0.0.1 from a thread,
so clients (httpx, schemathesis, the OpenAI SDK) speak real HTTP and the engine keeps one event loop.
No fine-tuning job runner runs here (``adept up`` runs one beside Serve): jobs created through
the API are stored and answer every route, but stay ``validating_files`` — these suites test the
API's behaviour, tests/integration/finetuning trains jobs for real.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EngineLLM:
    """``LLMBackend`` over a real engine: what one LLM replica does, minus Serve's multiplexing."""

    def __init__(self, engine: Any, loader: Any) -> None:
        self.engine = engine
        self.loader = loader

    async def generate(self, model_id: str, request: Any) -> AsyncIterator[Any]:
        if model_id and model_id not in self.engine.loaded_adapters:
            await self.loader.load(model_id)
        async for chunk in self.engine.generate(request, model_id):
            yield chunk

    async def unload(self, model_id: str) -> int:
        return int(await self.engine.unload_adapter(model_id))

    async def info(self) -> dict[str, Any]:
        return {
            "base_model": "in-process",
            "max_model_len": self.engine.max_model_len,
            "loaded_adapters": self.engine.loaded_adapters,
            "replica_id": "in-process",
        }


def serving_config(data_dir: Path, model: Path | str, **overrides: Any) -> Any:
    """A small ``ServingConfig`` for tests: tiny limits so fuzzing reaches them quickly."""
    from adept.config.serving import ServingConfig

    cfg: dict[str, Any] = {
        "platform": {"data_dir": str(data_dir), "model": str(model), "device": "cpu", "dtype": "float32"},
        "llm": {"max_tokens_limit": 64, "default_max_tokens": 8, "max_adapters_per_replica": 4},
        "gateway": {"max_request_bytes": 64 * 1024, "request_timeout_s": 60},
        "retrieval": {"chunk_size_tokens": 64, "chunk_overlap_tokens": 8},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return ServingConfig.model_validate(cfg)


def build_context(cfg: Any, admin_key: str, *, embedder: Any = None) -> tuple[Any, list[Any]]:
    """The ``GatewayContext`` that ``GatewayDeployment.__init__`` builds, over in-process backends."""
    from adept.adapters import AdapterRegistry
    from adept.tenancy import hash_api_key
    from services.gateway.context import build_gateway_context
    from services.llm.adapters import AdapterLoader
    from services.llm.factory import build_engine
    from services.retrieval.knowledge_base import AsyncKnowledgeBase, KnowledgeBase

    p = cfg.platform
    p.data_dir.mkdir(parents=True, exist_ok=True)
    engine = build_engine(p, cfg.llm)  # the replica's own builder (HF engine on CPU)
    loader = AdapterLoader(engine, AdapterRegistry(p.resolved_adapter_store, cache_dir=p.data_dir / "cache"))
    llm = EngineLLM(engine, loader)
    kb_sync = KnowledgeBase(
        cfg.retrieval,
        milvus_uri=p.resolved_milvus_uri,
        collection=p.collection,
        embedding_model=p.embedding_model,
        embedder=embedder,
    )
    kb = AsyncKnowledgeBase(kb_sync)
    from tools.eval.promotion import completion_evaluator  # as the chart's app (tools.eval.serve_app)

    ctx = build_gateway_context(
        cfg,
        llm=llm,
        kb=kb,
        admin_key_sha256=hash_api_key(admin_key),
        unload=llm.unload,
        evaluator=completion_evaluator,
    )
    return ctx, [kb_sync]


@dataclass
class InProcessPlatform:
    """A running in-process gateway. ``stop()`` shuts the HTTP server and closes Milvus (idempotent)."""

    url: str
    admin_key: str
    config: Any
    ctx: Any
    app: Any
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _closers: list[Any] = field(default_factory=list, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.config.platform.data_dir

    @property
    def engine(self) -> Any:
        return self.ctx.completions.llm.engine

    @property
    def kb(self) -> Any:
        return self.ctx.kb.kb

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._server = None
        for c in self._closers:
            with contextlib.suppress(Exception):
                c.close()

    def __enter__(self) -> InProcessPlatform:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_inprocess(
    cfg: Any, admin_key: str, *, embedder: Any = None, port: int = 0, host: str = "127.0.0.1"
) -> InProcessPlatform:
    """Build the gateway app over real backends and serve it on ``host:port`` (0: any free port)."""
    import uvicorn

    from services.gateway.http_app import build_http_app

    ctx, closers = build_context(cfg, admin_key, embedder=embedder)
    app = build_http_app(ctx)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="adept-gw")
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process gateway did not start")
        time.sleep(0.02)
    return InProcessPlatform(f"http://{host}:{bound}", admin_key, cfg, ctx, app, server, thread, closers)
