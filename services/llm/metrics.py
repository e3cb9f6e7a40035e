"""Prometheus metrics of an LLM replica (Ray Serve metrics, exported by Ray's metrics agent).

Labels are the tenant and the adapter (``name@version``, ``base`` for the base model); never
prompt or answer text.
"""

from __future__ import annotations

from services.llm.engine import EngineObserver
from services.llm.protocol import Usage

LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]


def labels(adapter_id: str) -> dict[str, str]:
    """``{"tenant", "adapter"}`` of an adapter id (``""``: the base model)."""
    if not adapter_id:
        return {"tenant": "", "adapter": "base"}
    tenant, _, rest = adapter_id.partition("/")
    return {"tenant": tenant, "adapter": rest}


class ReplicaMetrics(EngineObserver):
    """Counters and histograms of one replica, fed by the engine and the adapter loader."""

    def __init__(self) -> None:
        from ray.serve import metrics

        tags = ("tenant", "adapter")
        self._tokens = metrics.Counter("adept_llm_generated_tokens", "Tokens generated.", tag_keys=tags)
        self._requests = metrics.Counter(
            "adept_llm_requests", "Generations finished, by finish reason.", tag_keys=(*tags, "finish_reason")
        )
        self._ttft = metrics.Histogram(
            "adept_llm_ttft_seconds", "Time to first token.", boundaries=LATENCY_BOUNDARIES, tag_keys=tags
        )
        self._latency = metrics.Histogram(
            "adept_llm_request_seconds", "Generation time.", boundaries=LATENCY_BOUNDARIES, tag_keys=tags
        )
        self._waiting = metrics.Gauge(
            "adept_llm_queue_waiting", "Requests waiting to join the batch, per tenant.", tag_keys=("tenant",)
        )
        self._running = metrics.Gauge(
            "adept_llm_batch_running", "Rows in the running batch, per tenant.", tag_keys=("tenant",)
        )
        self._kv_allocated = metrics.Gauge("adept_llm_kv_cache_bytes", "KV cache bytes allocated now.")
        self._kv_budget = metrics.Gauge("adept_llm_kv_cache_budget_bytes", "KV cache budget in bytes.")
        self._served = metrics.Counter(
            "adept_llm_served_tokens",
            "Tokens processed per tenant (what fair share charges): kind=prompt|output.",
            tag_keys=("tenant", "kind"),
        )
        self._seen_tenants: set[str] = set()
        self._loads = metrics.Counter("adept_llm_adapter_loads", "Adapter loads.", tag_keys=tags)
        self._load_seconds = metrics.Histogram(
            "adept_llm_adapter_load_seconds",
            "Adapter cold-load time.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=tags,
        )
        self._evictions = metrics.Counter("adept_llm_adapter_evictions", "Adapters unloaded.", tag_keys=tags)

    def queue_depth(self, waiting: dict[str, int], running: dict[str, int]) -> None:
        # Each series carries only its own tenant; tenants that went quiet are set back to 0.
        tenants = set(waiting) | set(running)
        for tenant in tenants | self._seen_tenants:
            self._waiting.set(waiting.get(tenant, 0), tags={"tenant": tenant})
            self._running.set(running.get(tenant, 0), tags={"tenant": tenant})
        self._seen_tenants = tenants

    def kv_cache(self, allocated_bytes: int, budget_bytes: int) -> None:
        self._kv_allocated.set(allocated_bytes)
        self._kv_budget.set(budget_bytes)

    def first_token(self, adapter_id: str, seconds: float) -> None:
        self._ttft.observe(seconds, tags=labels(adapter_id))

    def tokens(self, adapter_id: str, n: int) -> None:
        self._tokens.inc(n, tags=labels(adapter_id))

    def finished(self, adapter_id: str, usage: Usage, finish_reason: str, seconds: float) -> None:
        self._requests.inc(tags={**labels(adapter_id), "finish_reason": finish_reason})
        self._latency.observe(seconds, tags=labels(adapter_id))

    def served(self, tenant: str, *, prompt_tokens: int, output_tokens: int) -> None:
        if prompt_tokens:
            self._served.inc(prompt_tokens, tags={"tenant": tenant, "kind": "prompt"})
        if output_tokens:
            self._served.inc(output_tokens, tags={"tenant": tenant, "kind": "output"})

    def adapter_loaded(self, adapter_id: str, seconds: float) -> None:
        self._loads.inc(tags=labels(adapter_id))
        self._load_seconds.observe(seconds, tags=labels(adapter_id))

    def adapter_evicted(self, adapter_id: str) -> None:
        self._evictions.inc(tags=labels(adapter_id))
