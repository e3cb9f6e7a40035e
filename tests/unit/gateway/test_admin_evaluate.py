"""``POST /admin/tenants/{name}/evaluate``: eval-gated promotion's measuring, offered by the gateway to the
operator's job owner (``operators.handlers.GatewayEvaluator`` over ``AdminClient.evaluate``).

The gateway's real app on loopback (real stores, the console tests' platform) with the evaluator the
chart's builder injects (``tools.eval.serve_app`` -> ``tools.eval.promotion.completion_evaluator``: the
tenant's completion path, scored as ``adept eval`` scores). The questions are answered by that fixture's
LLM stand-in: what is under test is the route, its checks and the operator's client, not answer quality
(the real model measures in tests/integration/finetuning/test_openai_finetune.py).
"""

from __future__ import annotations

import asyncio

import pytest

from adept.admin_client import AdminClient
from adept.errors import InvalidRequest, NotFound, PermissionDenied, Unavailable
from adept.evalset import check_evaluation_file
from operators.handlers import GatewayEvaluator
from tests.unit.console.conftest import ADMIN_KEY, platform  # noqa: F401
from tests.unit.gateway.test_finetune_cli import served  # noqa: F401
from tests.unit.gateway.test_finetuning_api import ft  # noqa: F401
from tools.eval.promotion import completion_evaluator

EVAL = b'{"question": "What does Schedule R charge?", "answer": "$11.40", "expect": {"required_terms": ["$11.40"]}}\n'


@pytest.fixture
def gateway(served):  # noqa: F811
    ctx = served["ctx"]
    ctx.evaluator = completion_evaluator(ctx.completions, ctx.platform)
    with AdminClient(served["url"], ADMIN_KEY) as admin:
        yield {**served, "admin": admin}


def test_the_operator_measures_a_tenants_versions_through_the_gateway(gateway) -> None:
    evaluate = GatewayEvaluator(gateway["admin"])("acme", check_evaluation_file(EVAL, metric="combined"))
    metrics = asyncio.run(evaluate("acme/legal@v1"))
    assert {"combined", "f1"} <= set(metrics) and all(isinstance(v, float) for v in metrics.values())
    assert asyncio.run(evaluate("legal@v2")).keys() == metrics.keys()


def test_evaluate_is_admin_only_and_refuses_what_it_cannot_measure(gateway) -> None:
    admin = gateway["admin"]
    with pytest.raises(NotFound):  # another tenant's adapter is not acme's to measure (not a score of 0)
        admin.evaluate("acme", "globex/secret", EVAL.decode())
    with pytest.raises(NotFound):
        admin.evaluate("nobody", "legal", EVAL.decode())
    with pytest.raises(InvalidRequest) as e:
        admin.evaluate("acme", "legal", '{"question": ""}\n')
    assert "line 1" in e.value.message
    with AdminClient(gateway["url"], gateway["acme"]) as tenant, pytest.raises(PermissionDenied):
        tenant.evaluate("acme", "legal", EVAL.decode())  # a tenant key: 403
    gateway["ctx"].evaluator = None  # a gateway built without one (services.app:build_app alone)
    with pytest.raises(Unavailable, match=r"tools\.eval\.serve_app"):
        admin.evaluate("acme", "legal", EVAL.decode())
