"""Adapter loading from the registry into an engine: one load per adapter id, clear errors per adapter."""

from __future__ import annotations

import asyncio
import logging
import time

from adept.adapters import PEFT_FILES, AdapterRegistry, parse_adapter_id
from adept.errors import AdeptError, NotFound
from services.llm.engine import Engine
from services.llm.vllm_engine import VLLMEngine

log = logging.getLogger(__name__)


class AdapterLoadError(AdeptError):
    """An adapter's files exist but cannot be loaded (corrupt, or made for another base model)."""

    code = "adapter_load_failed"


class AdapterLoader:
    """Resolves ``tenant/name@vN`` in the registry and loads it into ``engine``.

    Concurrent requests for one unloaded adapter share one load task (as vllm's per-name lock
    does), so the files are read and the weights injected once.

    Args:
        engine: the engine whose peft model receives the adapters.
        registry: where adapters are published.
    """

    def __init__(self, engine: Engine | VLLMEngine, registry: AdapterRegistry) -> None:
        self.engine = engine
        self.registry = registry
        self.loads = 0  # completed loads, for tests and metrics
        self._tasks: dict[str, asyncio.Future] = {}

    async def load(self, adapter_id: str) -> float:
        """Make ``adapter_id`` loaded; return the seconds this call's load took (0.0 if already loaded).

        Raises:
            InvalidRequest: malformed id.
            NotFound: no such adapter, or its files are gone.
            AdapterLoadError: its files cannot be loaded.
        """
        if adapter_id in self.engine.loaded_adapters:
            return 0.0
        task = self._tasks.get(adapter_id)
        if task is None:
            task = asyncio.ensure_future(self._load(adapter_id))
            self._tasks[adapter_id] = task
            task.add_done_callback(lambda _t: self._tasks.pop(adapter_id, None))
        # shield: one waiter going away (client disconnect) must not cancel the load others wait for.
        return await asyncio.shield(task)

    async def _load(self, adapter_id: str) -> float:
        started = time.monotonic()
        tenant, name, version = parse_adapter_id(adapter_id)
        found = await asyncio.to_thread(self.registry.resolve, tenant, name, version)
        missing = [f for f in PEFT_FILES if not (found.path / f).is_file()]
        if missing:
            raise NotFound(
                f"adapter {adapter_id}: its files are missing from the adapter store ({', '.join(missing)})",
                code="model_not_found",
            )
        try:
            await self.engine.load_adapter(adapter_id, found.path)
        except AdeptError:
            raise  # already typed (the vLLM engine refuses an adapter it cannot serve with a 400)
        except Exception as e:
            log.warning("loading adapter %s from %s failed: %r", adapter_id, found.path, e)
            raise AdapterLoadError(f"adapter {adapter_id} could not be loaded: {_reason(e)}") from None
        self.loads += 1
        return time.monotonic() - started


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"its files are corrupt or were written for another base model ({type(e).__name__}: {text[:200]})"
