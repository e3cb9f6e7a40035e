"""The HTTP layer's error mapping, body limits and routing, on the real FastAPI app with small fakes."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantQuotas, TenantSpec
from adept.platform import Platform
from adept.tenancy import hash_api_key
from services.gateway.auth import Authenticator
from services.gateway.context import GatewayContext
from services.gateway.embeddings import EmbeddingService
from services.gateway.http_app import build_http_app
from tests.unit.gateway.conftest import BASE

ADMIN = "admin-secret"


class FakeEmbedder:
    async def embed(self, texts):
        return [[float(len(t)), 0.5] for t in texts]

    async def embed_ids(self, arrays):
        return [[float(len(ids)), -1.0] for ids in arrays]


@pytest.fixture
def http(service, store, registry, tenants, clock, tmp_path):
    svc, _, kb = service
    health = {"llm": "ready", "retrieval": "ready"}

    async def report():
        return dict(health)

    ctx = GatewayContext(
        auth=Authenticator(store, hash_api_key(ADMIN)),
        catalog=svc.catalog,
        completions=svc,
        embeddings=EmbeddingService(FakeEmbedder(), "bundled:all-minilm-l6-v2"),
        platform=Platform(
            PlatformConfig(data_dir=tmp_path, model=BASE), tenants=store, registry=registry, documents=kb
        ),
        kb=kb,
        metrics=svc.metrics,
        quotas=svc.quotas,
        max_request_bytes=2048,
        max_upload_bytes=4096,
        health=report,
    )
    client = TestClient(build_http_app(ctx), raise_server_exceptions=False)
    client.health = health
    return client


def auth(tenants, name="acme"):
    return {"Authorization": f"Bearer {tenants[name][1]}"}


def error_of(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}
    return body["error"]


CHAT = {"model": BASE, "messages": [{"role": "user", "content": "hi"}]}


def test_malformed_json_and_missing_fields_are_400(http, tenants):
    h = {**auth(tenants), "Content-Type": "application/json"}
    assert (
        error_of(http.post("/v1/chat/completions", content=b"{oops", headers=h), 400)["type"]
        == "invalid_request_error"
    )
    assert (
        error_of(http.post("/v1/chat/completions", json={"model": BASE}, headers=h), 400)["param"]
        == "messages"
    )
    assert error_of(http.post("/v1/completions", json={"model": BASE}, headers=h), 400)["param"] == "prompt"
    assert error_of(http.post("/v1/embeddings", json={"input": "x"}, headers=h), 400)["param"] == "model"


def test_unknown_route_and_method(http, tenants):
    err = error_of(http.get("/v2/whatever", headers=auth(tenants)), 404)
    assert err["code"] == "unknown_url"
    error_of(http.get("/v1/chat/completions", headers=auth(tenants)), 405)


def test_auth_errors(http, tenants):
    assert error_of(http.post("/v1/chat/completions", json=CHAT), 401)["code"] == "missing_api_key"
    error_of(
        http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer adept-nope"}), 401
    )
    error_of(http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {ADMIN}"}), 401)
    error_of(http.get("/admin/tenants", headers=auth(tenants)), 403)
    assert http.get("/admin/tenants", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200


def test_body_limit_by_header_and_by_stream(http, tenants):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 3000}]}
    error_of(http.post("/v1/chat/completions", json=big, headers=auth(tenants)), 413)

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield json.dumps(big).encode()

    error_of(http.post("/v1/chat/completions", content=chunks(), headers=auth(tenants)), 413)


def test_chat_json_and_sse(http, tenants):
    r = http.post("/v1/chat/completions", json=CHAT, headers=auth(tenants))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("base:")
    r = http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth(tenants))
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in r.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "stop"


def test_quota_429_carries_retry_after(http, tenants):
    for _ in range(2):  # globex: 2 requests per minute
        assert http.get("/v1/models", headers=auth(tenants, "globex")).status_code == 200
    r = http.get("/v1/models", headers=auth(tenants, "globex"))
    assert error_of(r, 429)["type"] == "rate_limit_error"
    assert r.headers["Retry-After"] == "60"  # the fake clock does not move


def test_embeddings_float_and_base64(http, tenants):
    import base64
    import struct

    r = http.post(
        "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["ab", "c"]}, headers=auth(tenants)
    )
    assert [d["embedding"] for d in r.json()["data"]] == [[2.0, 0.5], [1.0, 0.5]]
    r = http.post(
        "/v1/embeddings",
        json={"model": "embedding", "input": "ab", "encoding_format": "base64"},
        headers=auth(tenants),
    )
    assert struct.unpack("<2f", base64.b64decode(r.json()["data"][0]["embedding"])) == (2.0, 0.5)
    error_of(http.post("/v1/embeddings", json={"model": BASE, "input": "x"}, headers=auth(tenants)), 404)


def test_embeddings_from_token_arrays(http, tenants):
    r = http.post(
        "/v1/embeddings", json={"model": "embedding", "input": [[5, 6, 7], [8]]}, headers=auth(tenants)
    )
    assert r.status_code == 200, r.text
    assert [d["embedding"] for d in r.json()["data"]] == [[3.0, -1.0], [1.0, -1.0]]
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == 4  # ids are counted exactly
    one = http.post("/v1/embeddings", json={"model": "embedding", "input": [5, 6]}, headers=auth(tenants))
    assert [d["embedding"] for d in one.json()["data"]] == [[2.0, -1.0]]
    for bad in ([[1], []], [1, "a"], [-1], [[1, True]]):
        r = http.post("/v1/embeddings", json={"model": "embedding", "input": bad}, headers=auth(tenants))
        assert error_of(r, 400)["param"] == "input"
    # The route is authenticated like every tenant route; there is nothing stored to isolate.
    assert http.post("/v1/embeddings", json={"model": "embedding", "input": [1]}).status_code == 401


def test_healthz_is_503_until_every_deployment_is_ready(http):
    assert http.get("/healthz").status_code == 200
    http.health["llm"] = "UPDATING"
    r = http.get("/healthz")
    assert r.status_code == 503 and r.json()["deployments"]["llm"] == "UPDATING"


def test_admin_tenant_crud(http, tenants):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    r = http.post(
        "/admin/tenants", json={"name": "new-co", "quotas": {"requests_per_minute": 5}}, headers=admin
    )
    assert r.status_code == 201 and r.json()["api_key"].startswith("adept-")
    key = r.json()["api_key"]
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    error_of(http.post("/admin/tenants", json={"name": "new-co"}, headers=admin), 409)
    error_of(http.post("/admin/tenants", json={"name": "Bad Name"}, headers=admin), 400)
    assert [t["name"] for t in http.get("/admin/tenants", headers=admin).json()["data"]] == [
        "acme",
        "globex",
        "new-co",
    ]
    assert "api_key" not in http.get("/admin/tenants/new-co", headers=admin).json()
    assert http.delete("/admin/tenants/new-co", headers=admin).status_code == 200
    error_of(http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}), 401)
    error_of(http.delete("/admin/tenants/new-co", headers=admin), 404)


def test_metrics_route_labels(http, tenants):
    http.get("/v1/nope/secret-path", headers=auth(tenants))
    http.get("/v1/models", headers=auth(tenants))
    error_of(http.get("/metrics"), 401)
    error_of(http.get("/metrics", headers=auth(tenants)), 403)  # labels name every tenant: admin only
    text = http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert 'adept_requests_total{route="unmatched",status="404",tenant="-"} 1.0' in text
    assert 'adept_requests_total{route="/v1/models",status="200",tenant="acme"} 1.0' in text
    assert "secret-path" not in text and tenants["acme"][1] not in text


def test_unexpected_errors_are_generic_500(http, tenants, service):
    _, llm, _ = service
    llm.fail_with = RuntimeError("boom with secret detail")
    r = http.post("/v1/chat/completions", json=CHAT, headers=auth(tenants))
    err = error_of(r, 500)
    assert err["type"] == "server_error" and "secret" not in err["message"]


def test_update_quotas_via_admin(http, tenants, store):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    spec = TenantSpec(name="acme", quotas=TenantQuotas(requests_per_minute=7)).model_dump()
    assert (
        http.put("/admin/tenants/acme", json=spec, headers=admin).json()["quotas"]["requests_per_minute"] == 7
    )
    error_of(http.put("/admin/tenants/globex", json=spec, headers=admin), 400)


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_openapi_documents_response_models_and_error_envelopes(http):
    doc = http.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def body(path, method, status, media="application/json"):
        return doc["paths"][path][method]["responses"][str(status)]["content"][media]["schema"]

    assert body("/v1/chat/completions", "post", 200) == {"$ref": "#/components/schemas/ChatCompletion"}
    assert body("/v1/chat/completions", "post", 200, "text/event-stream")["type"] == "string"
    assert body("/v1/completions", "post", 200) == {"$ref": "#/components/schemas/Completion"}
    assert body("/v1/embeddings", "post", 200) == {"$ref": "#/components/schemas/EmbeddingResponse"}
    assert body("/v1/models", "get", 200) == {"$ref": "#/components/schemas/ModelList"}
    assert body("/healthz", "get", 503) == {"$ref": "#/components/schemas/HealthResponse"}
    assert body("/v1/kb/search", "post", 200) == {"$ref": "#/components/schemas/SearchResponse"}
    assert body("/v1/kb/documents", "post", 400) == {"$ref": "#/components/schemas/IngestErrorResponse"}
    for status in (400, 401, 404, 429, 503):
        assert body("/v1/chat/completions", "post", status) == {"$ref": "#/components/schemas/ErrorResponse"}
    # Stream events are in the components although no route returns them as JSON.
    assert {"ChatCompletionChunk", "CompletionChunk", "ChoiceDelta"} <= set(schemas)
    assert "citations" in schemas["ChatCompletionChunk"]["properties"]
    dangling = {r for r in _refs(doc) if r.startswith("#/components/")} - {
        f"#/components/schemas/{name}" for name in schemas
    }
    assert not dangling


def readme_routes() -> list[tuple[str, str]]:
    """``(method, path)`` of every route named in the README's OpenAI-compatible API table."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    api = text.split("### The OpenAI-compatible API", 1)[1]
    table = api.split("| route | what |", 1)[1].split("\n\n", 1)[0]
    routes = re.findall(r"`(GET|POST|DELETE|PUT) (/[^`]*)`", table)
    assert len(routes) >= 8, routes  # the table was found and read
    return routes


def test_every_route_in_the_readme_table_answers_as_documented(http, tenants):
    import re

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", path)  # parameter names may differ from the README's

    paths = http.get("/openapi.json").json()["paths"]
    served = {(m.upper(), shape(path)) for path, ops in paths.items() for m in ops}
    for method, path in readme_routes():
        assert (method, shape(path)) in served, (
            f"README documents {method} {path}, which the gateway does not serve"
        )
        if path.startswith("/v1/"):  # "Every tenant route takes Authorization: Bearer <tenant key>"
            r = http.request(method, path.replace("{id}", "x"))
            assert r.status_code == 401, (method, path, r.status_code)
    assert http.get("/healthz").status_code == 200  # no key
    # GET /metrics: the admin key, not a tenant's, not none; and the README says so.
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `GET /metrics`"))
    assert "admin key" in row and "no authentication" not in row
    assert http.get("/metrics").status_code == 401
    assert http.get("/metrics", headers=auth(tenants)).status_code == 403
    r = http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")


def test_the_tables_request_fields_are_served_as_documented(http, tenants):
    """The table's rows name request fields; each is honoured (200 with its answer), not refused."""
    h = auth(tenants)
    r = http.post("/v1/embeddings", json={"model": "embedding", "input": [[1, 2], [3]]}, headers=h)
    assert r.status_code == 200 and len(r.json()["data"]) == 2, r.text
    r = http.post("/v1/completions", json={"model": BASE, "prompt": "a b", "logprobs": 2, "n": 2}, headers=h)
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        assert set(choice["logprobs"]) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    r = http.post("/v1/completions", json={"model": BASE, "prompt": "a b", "echo": True}, headers=h)
    assert r.json()["choices"][0]["text"].startswith("a b")
    messages = [{"role": "user", "content": "hi"}]
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": BASE,
            "messages": messages,
            "logprobs": True,
            "top_logprobs": 1,
            "n": 2,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "logit_bias": {"5": 1.0},
        },
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]
    assert all(c["logprobs"]["content"] for c in r.json()["choices"])
    over = http.post("/v1/chat/completions", json={"model": BASE, "messages": messages, "n": 5}, headers=h)
    assert error_of(over, 400)["param"] == "n"  # above llm.max_choices (4)
