"""What eval-gated promotion needs from ``adept eval``: the evaluation file checked, and an ``evaluate`` callable.

The kernel decides (``Platform.promote``); this module measures. A fine-tuning job that names an
``evaluation_file`` has it checked at create (``check_evaluation_file``: every bad line at once),
and after publishing its adapter inactive, the job owner calls::

    evaluate = make_evaluator(PlatformClient(gateway_url, tenant_key), eval_set, rag=True)
    outcome = await platform.promote(tenant, name, version, evaluate,
                                     metric=settings.promotion_metric, margin=settings.promotion_margin)

``evaluate("tenant/name@vN")`` asks every question of the set on that version through the tenant's
public API — the same requests, decoding and scoring ``adept eval`` uses — and returns the mean of
every metric.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from adept.errors import AdeptError
from adept.evalset import EvalSet
from adept.evalset import check_evaluation_file as _check
from tools.eval.routes import ROUTES, Decoding, RoutePlan, ask
from tools.eval.scoring import METRICS, RouteResult, score_question, summarise

Evaluate = Callable[[str], Awaitable[dict[str, float]]]


def check_evaluation_file(
    data: bytes, source: str = "evaluation_file", *, metric: str | None = None
) -> EvalSet:
    """The kernel's check (``adept.evalset.check_evaluation_file``), with ``metric`` one of ``adept eval``'s."""
    return _check(data, source, metric=metric, known_metrics=METRICS)


def score_model(
    client: Any, eval_set: EvalSet, model_id: str, *, rag: bool = True, decoding: Decoding | None = None
) -> dict[str, float]:
    """Ask every question on ``model_id`` (with RAG or not) and return each metric's mean."""
    dec = decoding or Decoding()
    route = ROUTES["rag+lora" if rag else "lora"]
    result = RouteResult(route.name, route.label, model_id)
    plan = RoutePlan(route, model_id)
    for item in eval_set.items:
        answer, error = None, None
        try:
            answer = ask(client, plan, item.question, dec)
        except AdeptError as e:
            error = e.message
        result.questions.append(score_question(item, route, answer, error, None, dec.top_k))
    summary = summarise(result, n_resamples=200)
    return {k: v["mean"] for k, v in summary["metrics"].items()}


def make_evaluator(
    client: Any, eval_set: EvalSet, *, rag: bool = True, decoding: Decoding | None = None
) -> Evaluate:
    """The ``evaluate`` callable ``Platform.promote`` takes (runs ``score_model`` off the event loop)."""

    async def evaluate(model_id: str) -> dict[str, float]:
        return await asyncio.to_thread(score_model, client, eval_set, model_id, rag=rag, decoding=decoding)

    return evaluate


class CompletionClient:
    """``PlatformClient.chat`` over a platform's own completion path (``CompletionService``), as one tenant.

    Promotion measures with the model that serves: the same request, resolution, retrieval and
    decoding as ``POST /v1/chat/completions`` with the tenant's key, without a key or HTTP.
    """

    def __init__(self, completions: Any, tenant: Any) -> None:
        self.completions = completions
        self.tenant = tenant

    def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        seed: int,
        rag_top_k: int | None = None,
    ) -> Any:
        import time

        from services.gateway.protocol import ChatCompletionRequest
        from tools.eval.client import ChatAnswer

        req = ChatCompletionRequest.model_validate(
            {
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "seed": seed,
                "rag": {"top_k": rag_top_k} if rag_top_k is not None else False,
            }
        )
        start = time.perf_counter()
        done = asyncio.run(self.completions.chat(self.tenant, req))
        choice = done.choices[0]
        citations = done.citations or []
        return ChatAnswer(
            text=choice.message.content or "",
            latency_s=time.perf_counter() - start,
            prompt_tokens=done.usage.prompt_tokens,
            completion_tokens=done.usage.completion_tokens,
            finish_reason=choice.finish_reason,
            cited_documents=[c.document_id for c in citations],
            cited_chunks=[c.chunk_id for c in citations],
        )


def completion_evaluator(completions: Any, platform: Any, *, rag: bool = True) -> Any:
    """The ``Evaluator`` a job owner takes (``FineTuning(evaluator=...)``): each tenant's versions
    measured through ``completions`` (a ``CompletionService``) as that tenant."""

    def for_tenant(tenant: str, eval_set: EvalSet) -> Evaluate:
        async def evaluate(model_id: str) -> dict[str, float]:
            client = CompletionClient(completions, await platform.get_tenant(tenant))
            return await asyncio.to_thread(score_model, client, eval_set, model_id, rag=rag)

        return evaluate

    return for_tenant


def serve_evaluator(config: Any) -> Any:
    """``completion_evaluator`` over a running Serve application's LLM and retrieval deployments
    (embedded mode's job runner; the gateway's own completion path, built as the gateway builds it)."""
    from ray import serve

    from services.gateway.backends import ServeKnowledgeBase, ServeLLM
    from services.gateway.context import build_gateway_context

    # The platform's own measuring: it does not count against the tenant's request and token limits
    # (a rate-limited question would score as a wrong answer).
    unmetered = config.model_copy(
        update={"gateway": config.gateway.model_copy(update={"enforce_quotas": False})}
    )
    ctx = build_gateway_context(
        unmetered,
        llm=ServeLLM(serve.get_deployment_handle("llm", app_name=config.app_name)),
        kb=ServeKnowledgeBase(serve.get_deployment_handle("retrieval", app_name=config.app_name)),
        admin_key_sha256="0" * 64,  # no admin calls: only completions
        unload=None,
    )
    return completion_evaluator(ctx.completions, ctx.platform)
