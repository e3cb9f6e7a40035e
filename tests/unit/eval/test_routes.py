"""Route planning: which model each route calls, and why a route is skipped."""

from __future__ import annotations

import pytest

from adept.errors import InvalidRequest, NotFound
from tools.eval.routes import ROUTES, Decoding, build_messages, parse_route_names, plan_routes, split_models

CARDS = [
    {"id": "smollm2-135m-instruct", "owned_by": "adept", "root": None},
    {"id": "lumen-style", "owned_by": "demo", "root": "smollm2-135m-instruct", "version": "v2"},
    {"id": "alpha", "owned_by": "demo", "root": "smollm2-135m-instruct", "version": "v1"},
]


def test_split_models_separates_base_and_adapters() -> None:
    assert split_models(CARDS) == ("smollm2-135m-instruct", ["alpha", "lumen-style"])
    assert split_models([{"id": "m", "root": "m"}]) == ("m", [])


def test_parse_route_names_orders_and_aliases() -> None:
    assert [r.name for r in parse_route_names("rag+lora, base")] == ["base", "rag+lora"]
    assert [r.name for r in parse_route_names("adapter,base+rag")] == ["rag", "lora"]
    with pytest.raises(InvalidRequest, match="unknown route"):
        parse_route_names("base,finetune")


def _plan(**kw):
    args = {"base_model": "base-m", "adapters": ["alpha"], "wanted_adapter": None, "kb_documents": 3} | kw
    return {p.route.name: p for p in plan_routes(list(ROUTES.values()), **args)}


def test_all_routes_runnable() -> None:
    plans = _plan()
    assert all(p.skipped is None for p in plans.values())
    assert plans["base"].model == "base-m" and plans["rag+lora"].model == "alpha"


def test_no_adapter_skips_adapter_routes_with_reason() -> None:
    plans = _plan(adapters=[])
    assert plans["base"].skipped is None and plans["rag"].skipped is None
    assert "no adapter" in plans["lora"].skipped and "no adapter" in plans["rag+lora"].skipped


def test_unknown_adapter_names_the_available_ones() -> None:
    plans = _plan(wanted_adapter="missing")
    assert "'missing' is not among the tenant's adapters (alpha)" in plans["lora"].skipped


def test_adapter_chosen_by_name_or_version() -> None:
    assert _plan(adapters=["alpha", "beta"], wanted_adapter="beta")["lora"].model == "beta"
    assert _plan(adapters=["demo/beta@v1"], wanted_adapter="beta")["lora"].model == "demo/beta@v1"
    assert _plan(adapters=["beta"], wanted_adapter="beta@v1")["lora"].model == "beta@v1"


def test_empty_kb_skips_rag_routes() -> None:
    plans = _plan(kb_documents=0, adapters=[])
    assert plans["base"].skipped is None and plans["lora"].skipped
    assert "knowledge base is empty" in plans["rag"].skipped
    assert (
        "knowledge base is empty" in plans["rag+lora"].skipped and "no adapter" in plans["rag+lora"].skipped
    )


def test_no_base_model_is_an_error() -> None:
    with pytest.raises(NotFound):
        _plan(base_model=None)


def test_same_messages_for_every_route() -> None:
    msgs = build_messages("Q?", Decoding())
    assert msgs[0]["role"] == "system" and msgs[1] == {"role": "user", "content": "Q?"}
    assert build_messages("Q?", Decoding(system_prompt="")) == [{"role": "user", "content": "Q?"}]
