"""The Serve application end to end over HTTP: OpenAI client, adapters, RAG, isolation, errors, quotas.

One platform per module (see conftest): tests run in file order and the destructive ones come last.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the torque for a TX-9 clamp?"}]


def oai(env, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{env.url}/v1", api_key=env.keys[tenant], max_retries=0, timeout=120)


def chat(env, tenant: str, model: str, **kw) -> httpx.Response:
    with env.client(tenant) as c:
        return c.post(
            "/v1/chat/completions", json={"model": model, "messages": QUESTION, "temperature": 0, **kw}
        )


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"} and err["message"]
    return err


def test_healthz_reports_every_deployment_ready(env):
    r = httpx.get(f"{env.url}/healthz")
    assert r.status_code == 200
    assert r.json()["deployments"] == {"gateway": "ready", "llm": "ready", "retrieval": "ready"}


def test_models_lists_base_and_own_adapters_only(env):
    assert [m.id for m in oai(env, "acme").models.list()] == [env.base_model, "support"]
    assert [m.id for m in oai(env, "globex").models.list()] == [env.base_model, "legal"]
    assert oai(env, "acme").models.retrieve("support").id == "support"
    with pytest.raises(openai.NotFoundError):
        oai(env, "acme").models.retrieve("legal")


def test_adapters_change_the_output(env):
    outputs = {}
    for tenant, model in (("acme", env.base_model), ("acme", "support"), ("globex", "legal")):
        r = chat(env, tenant, model, max_tokens=12)
        assert r.status_code == 200, r.text
        outputs[model] = r.json()["choices"][0]["message"]["content"]
        assert r.json()["usage"]["completion_tokens"] > 0
    assert len(set(outputs.values())) == 3, outputs
    # Greedy decoding is deterministic: the same adapter gives the same answer again.
    again = chat(env, "acme", "support", max_tokens=12).json()["choices"][0]["message"]["content"]
    assert again == outputs["support"]


@pytest.mark.parametrize("model", ["legal", "globex/legal", "globex/legal@v1", "legal@v1", "no-such-adapter"])
def test_foreign_adapter_is_404_exactly_as_if_absent(env, model):
    err = assert_openai_error(chat(env, "acme", model), 404)
    assert err["code"] == "model_not_found"
    assert err["message"] == f"The model '{model}' does not exist or you do not have access to it."


def test_official_openai_client_chat_and_stream(env):
    client = oai(env, "acme")
    done = client.chat.completions.create(model="support", messages=QUESTION, max_tokens=6, temperature=0)
    assert done.object == "chat.completion" and done.model == "support@v1"
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    stream = client.chat.completions.create(
        model="support",
        messages=QUESTION,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == done.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    legacy = client.completions.create(model=env.base_model, prompt="Hello", max_tokens=4, temperature=0)
    assert legacy.object == "text_completion" and legacy.usage.completion_tokens <= 4


def test_embeddings_with_openai_client(env):
    out = oai(env, "acme").embeddings.create(model="all-minilm-l6-v2", input=["grid", "outage"])
    assert [len(d.embedding) for d in out.data] == [384, 384]
    floats = oai(env, "acme").embeddings.create(
        model="all-minilm-l6-v2", input="grid", encoding_format="float"
    )
    assert floats.data[0].embedding == pytest.approx(out.data[0].embedding, abs=1e-6)
    with pytest.raises(openai.NotFoundError):
        oai(env, "acme").embeddings.create(model="text-embedding-3-small", input="x")
    # Token arrays of the embedding model's own tokenizer, through the retrieval deployment's handle.
    from transformers import AutoTokenizer

    from adept.models import resolve_embedding_model

    tok = AutoTokenizer.from_pretrained(str(resolve_embedding_model("bundled:all-minilm-l6-v2")))
    by_ids = oai(env, "acme").embeddings.create(model="all-minilm-l6-v2", input=[tok("grid")["input_ids"]])
    assert by_ids.data[0].embedding == pytest.approx(out.data[0].embedding, abs=1e-5)
    with pytest.raises(openai.BadRequestError):
        oai(env, "acme").embeddings.create(model="all-minilm-l6-v2", input=[[len(tok) + 1]])


def test_rag_answers_with_citations_from_own_documents(env):
    docs = {
        "acme": [{"id": "clamps", "title": "TX-9 clamp manual", "text": "The TX-9 clamp torque is 42 Nm."}],
        "globex": [{"id": "secret", "title": "Globex clamps", "text": "Globex TX-9 clamp torque is 99 Nm."}],
    }
    for tenant, records in docs.items():
        with env.client(tenant) as c:
            r = c.post("/v1/kb/documents", json={"records": records})
            assert r.status_code == 200, r.text
    client = oai(env, "acme")
    done = client.chat.completions.create(
        model="support", messages=QUESTION, max_tokens=4, extra_body={"rag": {"top_k": 3}}
    )
    citations = done.model_extra["citations"]
    assert citations and {c["document_id"] for c in citations} == {"clamps"}
    assert set(citations[0]) == {"document_id", "chunk_id", "title", "score", "quote"}
    assert citations[0]["quote"] == "The TX-9 clamp torque is 42 Nm."  # its own sentence, never globex's
    stream = client.chat.completions.create(
        model=env.base_model, messages=QUESTION, max_tokens=4, stream=True, extra_body={"rag": True}
    )
    chunks = list(stream)
    assert {c["document_id"] for c in chunks[-1].model_extra["citations"]} == {"clamps"}
    # The tiny model (under 1 B parameters) answers extractively: whatever noise it would write, its
    # answer is copied from the caller's own sentence (or is the refusal), never from globex's.
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert answer and (answer in "The TX-9 clamp torque is 42 Nm." or "I don't know.".startswith(answer)), (
        answer
    )


def test_concurrent_mixed_tenant_requests_all_succeed(env):
    jobs = [
        ("acme", env.base_model),
        ("acme", "support"),
        ("globex", "legal"),
        ("globex", env.base_model),
    ] * 4

    async def one(tenant: str, model: str, i: int) -> httpx.Response:
        async with httpx.AsyncClient(base_url=env.url, timeout=300) as c:
            return await c.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {env.keys[tenant]}"},
                json={"model": model, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 6},
            )

    async def all_of_them() -> list[httpx.Response]:
        return await asyncio.gather(*(one(t, m, i) for i, (t, m) in enumerate(jobs)))

    responses = asyncio.run(all_of_them())
    assert [r.status_code for r in responses] == [200] * len(jobs), [
        r.text for r in responses if r.status_code != 200
    ]


def test_lru_eviction_and_reload_give_the_same_answers(env):
    # Two adapter slots per replica (conftest): a third adapter evicts the least recently used one.
    path = str(env.adapters_dir / "legal")
    assert (
        env.admin.post("/admin/adapters", json={"tenant": "acme", "name": "extra", "path": path}).status_code
        == 201
    )
    first = {
        m: chat(env, "acme", m, max_tokens=8).json()["choices"][0]["message"]["content"]
        for m in ("support", "extra")
    }
    legal = chat(env, "globex", "legal", max_tokens=8).json()["choices"][0]["message"]["content"]
    assert first["extra"] == legal  # same weights under two tenants' names, loaded separately
    for model, text in first.items():  # reloaded after eviction, each answers as before
        assert chat(env, "acme", model, max_tokens=8).json()["choices"][0]["message"]["content"] == text
    text = env.admin.get("/metrics").text
    assert "adept_llm_adapters_loaded" in text
    assert env.admin.delete("/admin/adapters/acme/extra").status_code == 200


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("malformed_json", 400),
        ("missing_messages", 400),
        ("unknown_field", 400),
        ("unknown_model", 404),
        ("max_tokens_over_limit", 400),
        ("bad_key", 401),
        ("no_key", 401),
        ("admin_key_as_tenant", 401),
        ("unknown_route", 404),
        ("wrong_method", 405),
        ("too_large", 413),
        ("empty_body", 400),
    ],
)
def test_malformed_requests_are_openai_style_4xx(env, case, status):
    key = env.keys["acme"]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body: object = {"model": env.base_model, "messages": QUESTION}
    url, method = "/v1/chat/completions", "POST"
    if case == "malformed_json":
        body = b'{"model": "x", "messages": [}'
    elif case == "missing_messages":
        body = {"model": env.base_model}
    elif case == "unknown_field":
        body = {**body, "temprature": 0.2}
    elif case == "unknown_model":
        body = {**body, "model": "gpt-4"}
    elif case == "max_tokens_over_limit":
        body = {**body, "max_tokens": 65}
    elif case == "bad_key":
        headers["Authorization"] = "Bearer adept-wrong"
    elif case == "no_key":
        del headers["Authorization"]
    elif case == "admin_key_as_tenant":
        headers["Authorization"] = "Bearer adept-admin-integration-test-key"
    elif case == "unknown_route":
        url = "/v1/nothing-here"
    elif case == "wrong_method":
        method = "GET"
    elif case == "too_large":
        body = {**body, "messages": [{"role": "user", "content": "x" * 70_000}]}
    elif case == "empty_body":
        body = b""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.request(method, env.url + url, headers=headers, content=content, timeout=60)
    assert_openai_error(r, status)


def test_admin_routes_refuse_tenant_keys(env):
    with env.client("acme") as c:
        assert_openai_error(c.get("/admin/tenants"), 403)
        # A tenant cannot unload anyone's adapter: the admin API refuses tenant keys outright.
        assert_openai_error(c.delete("/admin/adapters/globex/legal"), 403)
        assert_openai_error(c.delete("/admin/adapters/acme/support"), 403)
    assert_openai_error(httpx.get(f"{env.url}/admin/tenants"), 401)


def test_isolation_on_every_route(env):
    with env.client("acme") as acme:
        assert [d["id"] for d in acme.get("/v1/kb/documents").json()["documents"]] == ["clamps"]
        assert_openai_error(acme.delete("/v1/kb/documents/secret"), 404)
        hits = acme.post("/v1/kb/search", json={"query": "Globex clamp torque", "top_k": 5}).json()["results"]
        assert {h["document_id"] for h in hits} == {"clamps"}
        assert_openai_error(acme.get("/v1/models/globex/legal"), 404)
    with env.client("globex") as globex:
        assert [d["id"] for d in globex.get("/v1/kb/documents").json()["documents"]] == ["secret"]


def test_quota_gives_429_with_retry_after(env):
    client = oai(env, "limited")
    for _ in range(3):
        client.models.list()
    with pytest.raises(openai.RateLimitError) as e:
        client.models.list()
    assert int(e.value.response.headers["Retry-After"]) >= 1
    assert e.value.response.json()["error"]["type"] == "rate_limit_error"
    # Other tenants are not affected.
    assert oai(env, "acme").models.list().data


def test_metrics_have_labels_and_no_secrets(env):
    text = env.admin.get("/metrics").text
    assert 'adept_requests_total{route="/v1/chat/completions",status="200",tenant="acme"}' in text
    assert 'adept_generations_total{adapter="support@v1",tenant="acme"}' in text
    assert "adept_time_to_first_token_seconds_bucket" in text
    assert 'adept_llm_adapters_loaded{adapter="support@v1",tenant="acme"} 1.0' in text
    assert 'route="unmatched"' in text and "nothing-here" not in text
    for secret in (*env.keys.values(), "adept-admin-integration-test-key", "TX-9", "torque"):
        assert secret not in text


def test_publish_checks_base_model_and_adapter_quota(env, tmp_path):
    import shutil

    foreign = tmp_path / "foreign"
    shutil.copytree(env.adapters_dir / "support", foreign)
    cfg = json.loads((foreign / "adapter_config.json").read_text())
    (foreign / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": "other/model"})
    )
    r = env.admin.post("/admin/adapters", json={"tenant": "acme", "name": "foreign", "path": str(foreign)})
    assert assert_openai_error(r, 409)["code"] == "base_model_mismatch"
    r = env.admin.post("/admin/tenants", json={"name": "tiny", "quotas": {"max_adapters": 1}})
    assert r.status_code == 201
    path = str(env.adapters_dir / "support")
    assert (
        env.admin.post("/admin/adapters", json={"tenant": "tiny", "name": "a", "path": path}).status_code
        == 201
    )
    r = env.admin.post("/admin/adapters", json={"tenant": "tiny", "name": "b", "path": path})
    assert assert_openai_error(r, 403)["code"] == "quota_exceeded"
    r = env.admin.post("/admin/adapters", json={"tenant": "nobody", "name": "a", "path": path})
    assert_openai_error(r, 404)


def test_delete_adapter_unloads_it_and_hides_it(env):
    path = str(env.adapters_dir / "legal")
    assert (
        env.admin.post("/admin/adapters", json={"tenant": "acme", "name": "temp", "path": path}).status_code
        == 201
    )
    assert chat(env, "acme", "temp", max_tokens=2).status_code == 200  # loads it into the replica
    assert_openai_error(env.admin.delete("/admin/adapters/globex/temp"), 404)  # wrong owner: as absent
    r = env.admin.delete("/admin/adapters/acme/temp")
    assert r.status_code == 200 and r.json()["versions"] == ["v1"]
    assert_openai_error(chat(env, "acme", "temp"), 404)
    assert "temp" not in [m.id for m in oai(env, "acme").models.list()]


def test_delete_tenant_removes_documents_adapters_and_key(env):
    r = env.admin.post("/admin/tenants", json={"name": "gone"})
    key = r.json()["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    path = str(env.adapters_dir / "support")
    assert (
        env.admin.post("/admin/adapters", json={"tenant": "gone", "name": "x", "path": path}).status_code
        == 201
    )
    r = httpx.post(
        f"{env.url}/v1/kb/documents", headers=headers, json={"records": [{"id": "d", "text": "hello"}]}
    )
    assert r.status_code == 200
    r = env.admin.delete("/admin/tenants/gone")
    assert r.status_code == 200 and r.json()["adapters_deleted"] == 1
    assert_openai_error(httpx.get(f"{env.url}/v1/models", headers=headers), 401)
    assert_openai_error(env.admin.get("/admin/tenants/gone"), 404)
    assert_openai_error(env.admin.get("/admin/adapters/gone"), 404)
    # Re-created under the same name, it starts empty: nothing of the old tenant survived.
    key = env.admin.post("/admin/tenants", json={"name": "gone"}).json()["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{env.url}/v1/kb/documents", headers=headers).json()["documents"] == []
    assert [m["id"] for m in httpx.get(f"{env.url}/v1/models", headers=headers).json()["data"]] == [
        env.base_model
    ]


def test_restart_on_the_same_data_dir_finds_everything(env):
    from tests.integration.gateway.conftest import start

    env.platform.stop()
    env.platform = start(env.config)
    assert env.platform.url == env.url
    with env.client("acme") as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == [env.base_model, "support"]
        assert [d["id"] for d in c.get("/v1/kb/documents").json()["documents"]] == ["clamps"]
    assert chat(env, "acme", "support", max_tokens=2).status_code == 200


def test_unload_route_drops_an_adapter_from_replicas_but_keeps_it_published(env):
    path = str(env.adapters_dir / "legal")
    assert (
        env.admin.post("/admin/adapters", json={"tenant": "acme", "name": "swap", "path": path}).status_code
        == 201
    )
    before = chat(env, "acme", "swap", max_tokens=4).json()["choices"][0]["message"]["content"]
    r = env.admin.post("/admin/adapters/unload", json={"model": "acme/swap@v1"})
    assert r.status_code == 200 and r.json()["unloaded"] == ["acme/swap@v1"]
    r = env.admin.post("/admin/adapters/unload", json={"model": "acme/swap"})  # every version
    assert r.json()["unloaded"] == ["acme/swap@v1"]
    # Still published: the next request loads it again and answers the same.
    assert chat(env, "acme", "swap", max_tokens=4).json()["choices"][0]["message"]["content"] == before
    assert_openai_error(env.admin.post("/admin/adapters/unload", json={"model": "../etc"}), 400)
    with httpx.Client(base_url=env.url, headers={"Authorization": f"Bearer {env.keys['acme']}"}) as c:
        assert_openai_error(c.post("/admin/adapters/unload", json={"model": "acme/swap"}), 403)
    assert env.admin.delete("/admin/adapters/acme/swap").status_code == 200
