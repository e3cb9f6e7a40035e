"""``LLMDeployment``: the Ray Serve replica around the engine, with ``@serve.multiplexed`` tenant adapters.

Call it as ``handle.options(multiplexed_model_id=model_id, stream=True).generate.remote(req)``;
``model_id`` is ``""`` for the base model, else a resolved adapter id ``tenant/name@vN`` (the
gateway checks ownership first). Serve routes a model id to replicas that already hold it and
unloads the least recently used adapter beyond ``max_adapters_per_replica``.

Scaling down (or replacing) a replica does not cut its streams: Serve stops routing to it, then
waits up to the deployment's ``graceful_shutdown_timeout_s`` (``ServingConfig`` derives it from
the gateway's request timeout) for its ongoing requests to finish before the engine is closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ray import serve

from adept.adapters import AdapterRegistry
from adept.config.llm import LLMConfig
from adept.config.platform import PlatformConfig
from adept.errors import Unavailable
from services.llm.adapters import AdapterLoader
from services.llm.factory import build_engine, choose_engine
from services.llm.metrics import ReplicaMetrics
from services.llm.protocol import GenerateChunk, GenerateRequest

log = logging.getLogger(__name__)
# Serve writes this logger's INFO lines to the replica's log file (logs/serve/replica_<app>_llm_*.log).
serve_log = logging.getLogger("ray.serve")
# One line per adapter load on a replica (tenant/name@vN, seconds, epoch time): bench/autoscaling.py counts them.
COLD_LOAD_MESSAGE = "adapter cold load: %s in %.3f s at %.3f"
EVICTED_RETRIES = 5  # loads of one request's adapter that another load may evict before the request holds it
MULTIPLEX_ATTR = "__serve_multiplex_wrapper"  # where Serve keeps a multiplexed loader's LRU cache


class LoadedAdapter:
    """What the multiplexed loader returns. Serve awaits ``__del__`` when it evicts the adapter (LRU).

    ``__del__`` is an instance attribute, not a method: Serve looks it up with ``hasattr`` and
    awaits it, while the garbage collector (which only calls the class's ``__del__``) never does.
    """

    def __init__(self, adapter_id: str, unload: Callable[[str], Awaitable[Any]]) -> None:
        self.adapter_id = adapter_id
        self._unload = unload
        self.__del__ = self._evict

    async def _evict(self) -> None:
        await self._unload(self.adapter_id)


@serve.deployment(name="llm", max_ongoing_requests=320, ray_actor_options={"num_cpus": 1})
class LLMDeployment:
    """One replica: the base model loaded once, tenants' LoRA adapters multiplexed into it.

    Args:
        platform: ``PlatformConfig`` (or its dict): model, device, dtype, adapter store.
        llm: ``LLMConfig`` (or its dict): batching, adapters per replica, limits.
    """

    def __init__(
        self, platform: PlatformConfig | dict | None = None, llm: LLMConfig | dict | None = None
    ) -> None:
        self.platform = PlatformConfig.model_validate(platform or {})
        self.cfg = LLMConfig.model_validate(llm or {})
        self.metrics = ReplicaMetrics()
        self.engine_kind = choose_engine(self.cfg.engine)
        self.engine = build_engine(self.platform, self.cfg, observer=self.metrics)
        registry = AdapterRegistry(
            self.platform.resolved_adapter_store, cache_dir=self.platform.data_dir / "cache" / "adapters"
        )
        self.loader = AdapterLoader(self.engine, registry)

        async def load_adapter(model_id: str) -> LoadedAdapter:
            seconds = await self.loader.load(model_id)
            self.metrics.adapter_loaded(model_id, seconds)
            if seconds > 0:  # 0.0: the engine still held it (dropped from Serve's cache only)
                serve_log.info(COLD_LOAD_MESSAGE, model_id, seconds, time.time())
            return LoadedAdapter(model_id, self._evict)

        # Wrapped here, not with a class decorator, because the LRU size comes from the config.
        self._load_fn = load_adapter
        self._get_adapter = serve.multiplexed(max_num_models_per_replica=self.cfg.max_adapters_per_replica)(
            load_adapter
        )
        # An instance attribute, as in ``LoadedAdapter``: Serve awaits it at shutdown, the GC never calls it.
        self.__del__ = self._drained
        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # constructed outside Serve (tests, tools)
            self.replica_id = "local"
        log.info(
            "LLM replica %s ready: %s on %s (%s engine)",
            self.replica_id,
            self.platform.model,
            self.engine.device,
            self.engine_kind,
        )

    async def _evict(self, model_id: str) -> None:
        if await self.engine.unload_adapter(model_id):
            self.metrics.adapter_evicted(model_id)

    async def generate(self, req: GenerateRequest | dict) -> AsyncIterator[GenerateChunk]:
        """Stream the answer to ``req`` with the request's multiplexed model id (``""``: base model)."""
        req = GenerateRequest.model_validate(req)
        model_id = serve.get_multiplexed_model_id()
        if model_id:
            await self._get_adapter(model_id)
        # Loaded, then generate with no await in between: the engine's hold on the slot is taken before
        # its first await, so nothing can evict the adapter in that gap. A load's completion resumes this
        # coroutine only later, though, and meanwhile another load (Serve's LRU, or the engine's own when
        # every other slot is busy) may take the adapter again: check again after every load.
        for loads in range(EVICTED_RETRIES + 1):
            if not model_id or model_id in self.engine.loaded_adapters:
                break
            if loads == EVICTED_RETRIES:
                raise Unavailable(
                    f"adapter {model_id} was evicted {loads} times before it could be used: this "
                    "replica's adapter slots are all busy; retry shortly"
                )
            await self.loader.load(model_id)  # unloaded behind Serve's back (``unload``): load again
        async for chunk in self.engine.generate(req, model_id):
            yield chunk

    async def info(self) -> dict[str, Any]:
        """``{base_model, max_model_len, loaded_adapters, replica_id, engine, waiting, adapter_loads}``."""
        return {
            "base_model": self.platform.model,
            "max_model_len": self.engine.max_model_len,
            "loaded_adapters": self.engine.loaded_adapters,
            "replica_id": self.replica_id,
            "engine": self.engine_kind,
            "waiting": self.engine.waiting_requests,
            "adapter_loads": self.loader.loads,
        }

    async def unload(self, model_id: str) -> bool:
        """Unload an adapter from this replica (after it was deleted); False if it was not loaded here."""
        wrapper = getattr(self._load_fn, MULTIPLEX_ATTR, None)
        if wrapper is not None:
            wrapper.models.pop(model_id, None)  # best effort: Serve has no public API to drop one model
        unloaded = await self.engine.unload_adapter(model_id)
        if unloaded:
            self.metrics.adapter_evicted(model_id)
        return unloaded

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts of ``texts`` with this replica's tokenizer (no special tokens added)."""
        return await self.engine.count_tokens(list(texts))

    async def _drained(self) -> None:
        """Serve awaits this (as ``__del__``) once the stopping replica has drained: stop the engine's loop."""
        await self.engine.close()

    async def check_health(self) -> None:
        """Serve health check: raises once the engine's loop died, so Serve replaces this replica."""
        self.engine.check_health()
