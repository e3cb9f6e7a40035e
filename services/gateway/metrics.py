"""Prometheus metrics of the gateway, served at ``GET /metrics``.

Labels are limited to ``tenant``, ``adapter``, ``route`` and ``status``: never keys, prompt
text or raw paths (an unknown path is recorded as route ``unmatched``), so a scrape can be
shared with people who must not see traffic content.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """One registry per gateway replica (so tests and several apps in one process never clash)."""

    def __init__(self) -> None:
        disable_created_metrics()  # `*_created` series double the scrape and tell nobody anything here
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "adept_requests", "HTTP requests handled.", ["tenant", "route", "status"], registry=r
        )
        self.errors = Counter(
            "adept_request_errors",
            "HTTP requests answered with status >= 400.",
            ["tenant", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "adept_request_duration_seconds",
            "Time to the full response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.generations = Counter(
            "adept_generations", "Completed generations.", ["tenant", "adapter"], registry=r
        )
        self.ttft = Histogram(
            "adept_time_to_first_token_seconds",
            "From request arrival to the first generated text (retrieval included).",
            ["tenant", "adapter"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_s = Histogram(
            "adept_generation_tokens_per_second",
            "Completion tokens per second after the first token, per request.",
            ["tenant", "adapter"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "adept_prompt_tokens", "Prompt tokens processed.", ["tenant", "adapter"], registry=r
        )
        self.completion_tokens = Counter(
            "adept_completion_tokens", "Completion tokens generated.", ["tenant", "adapter"], registry=r
        )
        self.queue_depth = Gauge(
            "adept_llm_queue_depth",
            "Generations this gateway has sent to the LLM deployment and not yet finished.",
            ["tenant", "adapter"],
            registry=r,
        )
        self.adapter_loads = Counter(
            "adept_adapter_loads",
            "Adapter loads into LLM replicas, as reported by them.",
            ["tenant", "adapter"],
            registry=r,
        )
        self.adapter_evictions = Counter(
            "adept_adapter_evictions",
            "Adapters unloaded from LLM replicas (LRU or delete).",
            ["tenant", "adapter"],
            registry=r,
        )

        self.adapters_loaded = Gauge(
            "adept_llm_adapters_loaded",
            "LLM replicas holding the adapter, as seen at the last scrape.",
            ["tenant", "adapter"],
            registry=r,
        )
        self._seen: dict[str, set[str]] = {}

    def observe_request(self, *, route: str, tenant: str, status: int, seconds: float) -> None:
        self.requests.labels(tenant or "-", route, str(status)).inc()
        if status >= 400:
            self.errors.labels(tenant or "-", route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_generation(
        self,
        *,
        tenant: str,
        adapter: str,
        ttft_s: float | None,
        decode_s: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        labels = (tenant, adapter)
        self.generations.labels(*labels).inc()
        self.prompt_tokens.labels(*labels).inc(prompt_tokens)
        self.completion_tokens.labels(*labels).inc(completion_tokens)
        if ttft_s is not None:
            self.ttft.labels(*labels).observe(ttft_s)
        if decode_s > 0 and completion_tokens > 1:
            self.tokens_per_s.labels(*labels).observe((completion_tokens - 1) / decode_s)

    def adapter_event(self, *, tenant: str, adapter: str, event: str, count: int = 1) -> None:
        """Record ``load`` or ``eviction`` events reported by LLM replicas."""
        metric = self.adapter_loads if event == "load" else self.adapter_evictions
        metric.labels(tenant, adapter).inc(count)

    def observe_replicas(self, loaded: dict[str, list[str]]) -> None:
        """Update adapter gauges and load/eviction counts from ``{replica_id: loaded adapter ids}``.

        Loads and evictions are the differences between successive snapshots of a replica, so
        an adapter loaded and evicted between two scrapes is missed; the LLM replicas' own
        ``adept_llm_adapter_loads`` (exported by Ray's metrics agent) count every event.
        """
        holders: dict[tuple[str, str], int] = {}
        for replica, ids in loaded.items():
            now = set(ids)
            before = self._seen.get(replica)
            if before is not None:
                for adapter_id in now - before:
                    self.adapter_event(**_split(adapter_id), event="load")
                for adapter_id in before - now:
                    self.adapter_event(**_split(adapter_id), event="eviction")
            self._seen[replica] = now
            for adapter_id in now:
                key = tuple(_split(adapter_id).values())
                holders[key] = holders.get(key, 0) + 1
        self.adapters_loaded.clear()
        for (tenant, adapter), n in holders.items():
            self.adapters_loaded.labels(tenant, adapter).set(n)

    @contextmanager
    def in_flight(self, tenant: str, adapter: str) -> Iterator[None]:
        gauge = self.queue_depth.labels(tenant, adapter)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _split(adapter_id: str) -> dict[str, str]:
    """``tenant/name@v1`` -> ``{"tenant": "tenant", "adapter": "name@v1"}``."""
    tenant, _, adapter = adapter_id.partition("/")
    return {"tenant": tenant, "adapter": adapter or adapter_id}
