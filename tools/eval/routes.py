"""The four routes an eval compares, what each needs, and how one question is asked on each.

=========  ===============  ==========================================================
route      label            request
=========  ===============  ==========================================================
base       base             ``model`` = the base model
rag        base+RAG         base model with ``"rag": {"top_k": k}`` (answers cite passages)
lora       adapter          ``model`` = the tenant's adapter
rag+lora   adapter+RAG      the adapter with ``rag``
=========  ===============  ==========================================================

Every route goes through the same public API with the same decoding settings (greedy,
seeded, same ``max_tokens`` and system prompt), so only the route differs. A route whose
prerequisite is missing (the tenant has no adapter, the knowledge base is empty) is planned as
*skipped* with the reason, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adept.errors import InvalidRequest, NotFound

DEFAULT_SYSTEM_PROMPT = "Answer the question in as few words as possible."


@dataclass(frozen=True)
class Route:
    name: str
    label: str
    adapter: bool
    rag: bool
    # Rank used to prefer the simpler route when the better one is not significantly better.
    complexity: int


ROUTES: dict[str, Route] = {
    "base": Route("base", "base", adapter=False, rag=False, complexity=0),
    "rag": Route("rag", "base+RAG", adapter=False, rag=True, complexity=1),
    "lora": Route("lora", "adapter", adapter=True, rag=False, complexity=2),
    "rag+lora": Route("rag+lora", "adapter+RAG", adapter=True, rag=True, complexity=3),
}


@dataclass(frozen=True)
class Decoding:
    """Settings shared by every route (only the route may differ between runs)."""

    max_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    top_k: int = 4
    system_prompt: str = DEFAULT_SYSTEM_PROMPT


@dataclass
class RoutePlan:
    route: Route
    model: str | None
    skipped: str | None = None


def parse_route_names(spec: str) -> list[Route]:
    """``"base,rag"`` → routes, in the canonical order; unknown names are an ``InvalidRequest``."""
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    aliases = {"lora+rag": "rag+lora", "adapter": "lora", "adapter+rag": "rag+lora", "base+rag": "rag"}
    names = [aliases.get(n, n) for n in names]
    bad = [n for n in names if n not in ROUTES]
    if bad or not names:
        raise InvalidRequest(f"unknown route(s) {bad or [spec]}; choose from {', '.join(ROUTES)}")
    return [r for key, r in ROUTES.items() if key in names]


def split_models(cards: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """(base model id, the tenant's adapter ids) from ``/v1/models`` cards.

    Adapter cards carry a ``version`` or a ``root`` naming their base model (the vLLM
    convention); the base model's card has neither (or is its own root).
    """
    base, adapters = None, []
    for card in cards:
        cid = str(card.get("id", ""))
        root = card.get("root")
        if card.get("version") or (root and root != cid):
            adapters.append(cid)
        elif base is None:
            base = cid
    return base, sorted(adapters)


def _adapter_name(model_id: str) -> str:
    """``tenant/name@v3`` → ``name``."""
    return model_id.split("/")[-1].split("@")[0]


def choose_adapter(adapters: list[str], wanted: str | None) -> tuple[str | None, str | None]:
    """(adapter model id, skip reason). With no ``wanted`` name, the first adapter (by id) is used."""
    if wanted:
        for cid in adapters:
            if wanted == cid or _adapter_name(wanted) == _adapter_name(cid):
                return (wanted if "@" in wanted else cid), None
        listed = ", ".join(adapters) or "none"
        return None, f"adapter {wanted!r} is not among the tenant's adapters ({listed})"
    if not adapters:
        return None, "the tenant has no adapter (fine-tune one with `adept finetune`, or pass --adapter)"
    return adapters[0], None


def plan_routes(
    routes: list[Route],
    *,
    base_model: str | None,
    adapters: list[str],
    wanted_adapter: str | None,
    kb_documents: int,
) -> list[RoutePlan]:
    """Decide, per route, which model it calls or why it is skipped."""
    if base_model is None:
        raise NotFound("the server lists no base model in /v1/models")
    adapter, no_adapter = choose_adapter(adapters, wanted_adapter)
    plans = []
    for route in routes:
        reasons = []
        if route.adapter and adapter is None:
            reasons.append(no_adapter or "no adapter")
        if route.rag and kb_documents == 0:
            reasons.append("the knowledge base is empty (ingest documents with `adept kb ingest`)")
        model = adapter if route.adapter else base_model
        plans.append(RoutePlan(route, model, "; ".join(reasons) or None))
    return plans


def build_messages(question: str, decoding: Decoding) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": question}]
    if decoding.system_prompt:
        messages.insert(0, {"role": "system", "content": decoding.system_prompt})
    return messages


def ask(client: Any, plan: RoutePlan, question: str, decoding: Decoding) -> Any:
    """Ask one question on one planned route; returns the client's ``ChatAnswer``."""
    assert plan.model is not None and plan.skipped is None, "ask() needs a runnable plan"
    return client.chat(
        model=plan.model,
        messages=build_messages(question, decoding),
        max_tokens=decoding.max_tokens,
        temperature=decoding.temperature,
        seed=decoding.seed,
        rag_top_k=decoding.top_k if plan.route.rag else None,
    )
