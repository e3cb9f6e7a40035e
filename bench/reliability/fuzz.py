"""Bad input, politely refused: schemathesis over the gateway's OpenAPI schema, then targeted cases.

Every response must be < 500 and every error OpenAI-style JSON; streams must be complete.
The server must also never act on what it is sent: a URL in a document is never fetched
(a loopback listener counts connections), a header injected through ``model`` never becomes
a response header, and ``../`` in a name never reaches the filesystem.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.reliability.checks import error_problem, response_problem
from bench.reliability.report import Outcome

AUTH_VARIANTS = ("generated", "none", "tenant", "admin")


def _headers_for(case_headers: dict[str, Any] | None, variant: str, keys: dict[str, str]) -> dict[str, Any]:
    headers = {k: v for k, v in (case_headers or {}).items() if k.lower() != "authorization"}
    if variant == "generated":
        return dict(case_headers or {})
    if variant in keys:
        headers["Authorization"] = f"Bearer {keys[variant]}"
    return headers


def schema_fuzz(url: str, keys: dict[str, str], *, examples_per_operation: int = 8, seed: int = 0) -> Outcome:
    """Positive and negative cases for every operation in ``/openapi.json``, under four kinds of auth.

    Args:
        url: Base URL of a running gateway.
        keys: ``{"tenant": key, "admin": key}``.
        examples_per_operation: Hypothesis examples per operation and generation mode.
        seed: Hypothesis seed, so a run can be repeated.
    """
    import requests
    import schemathesis
    from schemathesis import GenerationMode

    out = Outcome("fuzz: OpenAPI schema (schemathesis)")
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    statuses: dict[str, int] = {}
    session = requests.Session()

    timing: dict[str, float] = {}
    for op in operations:
        t0 = time.monotonic()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(out, op, mode, url, keys, session, statuses, examples_per_operation, seed)
        timing[op.label] = round(time.monotonic() - t0, 2)
    out.load = f"{len(operations)} operations x 2 modes x {examples_per_operation}"
    out.details = {"operations": [op.label for op in operations], "statuses": statuses, "seconds": timing}
    out.seconds = time.monotonic() - started
    return out


def _fuzz_operation(
    out: Outcome,
    op: Any,
    mode: Any,
    url: str,
    keys: dict[str, str],
    session: Any,
    statuses: dict[str, int],
    examples: int,
    seed: int,
) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    negative = mode.value == "negative"

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode), variant=st.sampled_from(AUTH_VARIANTS))
    def one(case: Any, variant: str) -> None:
        case.headers = _headers_for(case.headers, variant, keys)
        try:
            resp = case.call(base_url=url, session=session, timeout=60)
        except (ValueError, UnicodeError):
            return  # the client library refused to send it (e.g. a non-latin-1 header): not our server
        except Exception as e:
            name = type(e).__name__
            if name in ("InvalidHeader", "InvalidURL", "LocationParseError", "InvalidSchema"):
                return
            out.fail(f"{op.label} [{variant}]: request failed: {name}: {str(e)[:160]}")
            return
        out.bad_inputs += negative or variant != "tenant"
        statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
        ctype = resp.headers.get("content-type") or [""]
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        problem = response_problem(resp.status_code, resp.content, ctype)
        if problem:
            out.fail(f"{case.method} {case.formatted_path} [{variant}, {mode.value}]: {problem}")

    from hypothesis.errors import Unsatisfiable

    try:
        one()
    except Unsatisfiable:
        pass  # e.g. no negative case exists for an operation without parameters


# -- targeted cases -------------------------------------------------------------------------------
class _Listener(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # any fetch of an SSRF-shaped URL lands here
        _Listener.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_HEAD = do_GET

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def canary_listener() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server whose hits prove the platform fetched a URL it was only meant to store."""
    _Listener.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Listener)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Listener.hits
    finally:
        server.shutdown()
        server.server_close()


Case = tuple[str, str, str, dict[str, Any], set[int] | None]


def _nested(depth: int) -> bytes:
    return b'{"model": "x", "messages": ' + b"[" * depth + b"]" * depth + b"}"


def targeted_cases(tenant: Any, ssrf: str, model: str) -> list[Case]:
    """``(name, method, path, httpx kwargs, allowed statuses or None for any < 500)``."""
    chat = "/v1/chat/completions"

    def body(**kw: Any) -> dict[str, Any]:
        return {"json": {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}}

    raw = {"headers": {"Content-Type": "application/json"}}
    big = "word " * 40_000
    cases: list[Case] = [
        (
            "oversized body (declared)",
            "POST",
            chat,
            body(messages=[{"role": "user", "content": big * 4}]),
            {413},
        ),
        (
            "oversized body (chunked, no length)",
            "POST",
            chat,
            {**raw, "content": iter([b'{"model": "x", "messages": [{"content": "', b"a" * 200_000, b'"}]}'])},
            {413},
        ),
        ("oversized search", "POST", "/v1/kb/search", {"json": {"query": big * 8}}, {400, 413}),
        ("deeply nested JSON (chat)", "POST", chat, {**raw, "content": _nested(30_000)}, {400}),
        ("deeply nested JSON (search)", "POST", "/v1/kb/search", {**raw, "content": _nested(30_000)}, {400}),
        (
            "deeply nested JSON (records)",
            "POST",
            "/v1/kb/documents",
            {**raw, "content": _nested(30_000)},
            {400},
        ),
        (
            "deeply nested JSON (admin)",
            "POST",
            "/admin/tenants",
            {**raw, "content": _nested(30_000)},
            {400, 401},
        ),
        ("huge max_tokens", "POST", chat, body(max_tokens=10**12), {400}),
        ("max_tokens 2**63", "POST", chat, body(max_tokens=2**63), {400}),
        ("negative max_tokens", "POST", chat, body(max_tokens=-1), {400}),
        ("huge max_completion_tokens", "POST", chat, body(max_completion_tokens=10**9), {400}),
        (
            "NaN temperature",
            "POST",
            chat,
            {**raw, "content": b'{"model":"m","messages":[],"temperature":NaN}'},
            {400},
        ),
        (
            "Infinity top_p",
            "POST",
            chat,
            {**raw, "content": b'{"model":"m","messages":[],"top_p":Infinity}'},
            {400},
        ),
        (
            "prompt longer than the context window",
            "POST",
            chat,
            body(messages=[{"role": "user", "content": "zz " * 12_000}]),
            {400, 413},
        ),
        (
            "completion prompt too long",
            "POST",
            "/v1/completions",
            {"json": {"model": model, "prompt": "zz " * 12_000}},
            {400, 413},
        ),
        (
            "invalid UTF-8 (chat)",
            "POST",
            chat,
            {**raw, "content": b'{"model": "\xff\xfe", "messages": []}'},
            {400},
        ),
        (
            "invalid UTF-8 (search)",
            "POST",
            "/v1/kb/search",
            {**raw, "content": b'{"query": "\xc3\x28"}'},
            {400},
        ),
        (
            "invalid UTF-8 (records)",
            "POST",
            "/v1/kb/documents",
            {**raw, "content": b'{"records": [{"text": "\xed\xa0\x80"}]}'},
            {400},
        ),
        (
            "lone surrogate in content",
            "POST",
            chat,
            {**raw, "content": b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'},
            None,
        ),
        (
            "lone surrogate in query",
            "POST",
            "/v1/kb/search",
            {**raw, "content": b'{"query": "a \\udfff b"}'},
            None,
        ),
        (
            "control characters in content",
            "POST",
            chat,
            body(messages=[{"role": "user", "content": "\x00\x01\x1b[31m\x7f\u202e"}], max_tokens=2),
            None,
        ),
        ("control characters in model", "POST", chat, body(model="\x00\x1b[2J\x07"), {400, 404}),
        (
            "header injection in model",
            "POST",
            chat,
            body(model="x\r\nSet-Cookie: pwned=1\r\nX-Injected: 1"),
            {400, 404},
        ),
        ("header injection in model path", "GET", "/v1/models/x%0d%0aX-Injected:%201", {}, {400, 404}),
        ("path traversal: model", "POST", chat, body(model="../../etc/passwd"), {400, 404}),
        (
            "path traversal: tenant/adapter model",
            "POST",
            chat,
            body(model=f"{tenant.name}/../../x"),
            {400, 404},
        ),
        ("path traversal: models route", "GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", {}, {400, 404}),
        ("path traversal: adapter metrics", "GET", "/v1/adapters/..%2F..%2Fetc/v1/metrics", {}, {400, 404}),
        (
            "path traversal: adapter version",
            "GET",
            f"/v1/adapters/{model}/..%2Fv1/loss_curve.png",
            {},
            {400, 404},
        ),
        ("path traversal: delete document", "DELETE", "/v1/kb/documents/../../../etc/passwd", {}, {400, 404}),
        (
            "path traversal: delete document (encoded)",
            "DELETE",
            "/v1/kb/documents/..%2F..%2Fadapters",
            {},
            {400, 404},
        ),
        (
            "path traversal: document id",
            "POST",
            "/v1/kb/documents",
            {"json": {"records": [{"id": "../../etc/passwd", "text": "x y z"}]}},
            None,  # ids are opaque keys in Milvus, never paths
        ),
        (
            "path traversal: upload filename",
            "POST",
            "/v1/kb/documents",
            {"files": {"file": ("../../../../tmp/adept-evil.md", b"# evil\n\ntext here")}},
            None,
        ),
        (
            "path traversal: search filter",
            "POST",
            "/v1/kb/search",
            {"json": {"query": "x", "filter": {"document_id": "../../x"}}},
            None,
        ),
        (
            "filter key injection",
            "POST",
            "/v1/kb/search",
            {"json": {"query": "x", "filter": {'tenant == "a" or 1': 1}}},
            {400},
        ),
        (
            "filter value injection",
            "POST",
            "/v1/kb/search",
            {"json": {"query": "x", "filter": {"document_id": '" or tenant != "'}}},
            None,
        ),
        (
            "SSRF: record metadata source",
            "POST",
            "/v1/kb/documents",
            {
                "json": {
                    "records": [
                        {
                            "text": "alpha beta gamma",
                            "metadata": {
                                "source": f"{ssrf}/meta",
                                "url": "http://169.254.169.254/latest/meta-data/",
                            },
                        }
                    ]
                }
            },
            None,
        ),
        (
            "SSRF: record id as URL",
            "POST",
            "/v1/kb/documents",
            {"json": {"records": [{"id": f"{ssrf}/id", "text": "alpha"}]}},
            None,
        ),
        (
            "SSRF: record url field",
            "POST",
            "/v1/kb/documents",
            {"json": {"records": [{"url": f"{ssrf}/url", "text": "x"}]}},
            {400},
        ),
        (
            "SSRF: source url body",
            "POST",
            "/v1/kb/documents",
            {"json": {"source": f"{ssrf}/src", "url": f"{ssrf}/u"}},
            {400},
        ),
        (
            "SSRF: upload named as URL",
            "POST",
            "/v1/kb/documents",
            {"files": {"file": (f"{ssrf}/doc.md", b"# t\n\nbody words")}},
            None,
        ),
        (
            "SSRF: HTML with remote refs",
            "POST",
            "/v1/kb/documents",
            {
                "files": {
                    "file": (
                        "page.html",
                        f'<html><img src="{ssrf}/img"><link href="{ssrf}/css"><iframe src="{ssrf}/f"></iframe><p>para text</p></html>'.encode(),
                    )
                }
            },
            None,
        ),
        (
            "SSRF: adapter path as URL (admin)",
            "POST",
            "/admin/adapters",
            {"json": {"tenant": tenant.name, "name": "x", "path": f"{ssrf}/adapter"}},
            {400, 401, 403},
        ),
        (
            "wrong content type",
            "POST",
            chat,
            {"content": b"model=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            {400, 415},
        ),
        ("no content type on upload", "POST", "/v1/kb/documents", {"content": b"hello"}, {400, 415}),
        (
            "multipart without boundary",
            "POST",
            "/v1/kb/documents",
            {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}},
            {400},
        ),
        (
            "truncated multipart",
            "POST",
            "/v1/kb/documents",
            {
                "content": b'--b\r\nContent-Disposition: form-data; name="f"; filename="a.md"\r\n\r\nabc',
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            {400},
        ),
        ("empty body", "POST", chat, {**raw, "content": b""}, {400}),
        ("JSON array body", "POST", chat, {**raw, "content": b"[1,2,3]"}, {400}),
        ("JSON scalar search", "POST", "/v1/kb/search", {**raw, "content": b'"q"'}, {400}),
        (
            "null everything",
            "POST",
            chat,
            {"json": {"model": None, "messages": None, "max_tokens": None}},
            {400},
        ),
        (
            "10k tiny messages",
            "POST",
            chat,
            body(messages=[{"role": "user", "content": "a"}] * 6000, max_tokens=1),
            {400, 413},
        ),
        ("wrong role", "POST", chat, body(messages=[{"role": "root", "content": "x"}]), {400}),
        (
            "content parts garbage",
            "POST",
            chat,
            body(
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"{ssrf}/img"}}]}
                ]
            ),
            {400},
        ),
        (
            "embeddings: too many inputs",
            "POST",
            "/v1/embeddings",
            {"json": {"model": "embedding", "input": ["a"] * 5000}},
            {400, 413},
        ),
        ("top_k huge", "POST", "/v1/kb/search", {"json": {"query": "x", "top_k": 10**9}}, {400}),
        ("top_k bool", "POST", "/v1/kb/search", {"json": {"query": "x", "top_k": True}}, None),
        ("rag top_k huge", "POST", chat, body(rag={"top_k": 10**6}), {400}),
        ("stop list huge", "POST", chat, body(stop=["x"] * 5000), {400}),
        ("seed huge", "POST", chat, body(seed=2**80, max_tokens=1), {200, 400}),
        ("n > 1", "POST", chat, body(n=5), {400}),
        ("method not allowed", "PUT", chat, {}, {405}),
        ("unknown route", "GET", "/v1/../../etc/passwd", {}, {404}),
        ("null byte in path", "GET", "/v1/models/a%00b", {}, {404}),
        ("very long path", "GET", "/v1/models/" + "a" * 8000, {}, {404, 414, 431}),
        ("stream with bad model", "POST", chat, body(model="nope", stream=True), {404}),
        ("stream + huge max_tokens", "POST", chat, body(stream=True, max_tokens=10**7), {400}),
        *finetuning_cases(model),
        *openai_feature_cases(model),
    ]
    return cases


def openai_feature_cases(model: str) -> list[Case]:
    """Malformed values of the OpenAI features: structured output, tools, logprobs, n, bias, penalties, token arrays.

    Each is a 4xx naming the problem (or, where OpenAI would accept the value, a 200), never a 500.
    """
    chat, legacy, embed = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
    hi = [{"role": "user", "content": "hi"}]

    def body(**kw: Any) -> dict[str, Any]:
        return {"json": {"model": model, "messages": hi, "max_tokens": 4, **kw}}

    def prompt(**kw: Any) -> dict[str, Any]:
        return {"json": {"model": model, "prompt": "the grid", "max_tokens": 4, **kw}}

    def embeds(value: Any) -> dict[str, Any]:
        return {"json": {"model": "embedding", "input": value}}

    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(80):
        deep = {"type": "object", "properties": {"a": deep}}

    def schema(s: Any) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": "out", "schema": s}}

    return [
        ("response_format: unknown type", "POST", chat, body(response_format={"type": "xml"}), {400}),
        ("response_format: a string", "POST", chat, body(response_format="json"), {400}),
        (
            "response_format: json_schema without schema",
            "POST",
            chat,
            body(response_format={"type": "json_schema"}),
            {400},
        ),
        ("response_format: schema not an object", "POST", chat, body(response_format=schema("x")), {400}),
        (
            "response_format: schema type nonsense",
            "POST",
            chat,
            body(response_format=schema({"type": "nonsense"})),
            {200, 400},  # xgrammar's to judge; never a 5xx
        ),
        ("response_format: schema nested 80 deep", "POST", chat, body(response_format=schema(deep)), {400}),
        (
            "response_format: schema of 40 KB",
            "POST",
            chat,
            body(response_format=schema({"type": "object", "description": "d" * 40_000})),
            {400, 413},
        ),
        (
            "response_format: bad schema name",
            "POST",
            chat,
            body(response_format={"type": "json_schema", "json_schema": {"name": "a b"}}),
            {400},
        ),
        ("response_format: json_object", "POST", chat, body(response_format={"type": "json_object"}), {200}),
        ("tools: not a list", "POST", chat, body(tools={"type": "function"}), {400}),
        (
            "tools: bad function name",
            "POST",
            chat,
            body(tools=[{"type": "function", "function": {"name": "a b!"}}]),
            {400},
        ),
        ("tools: duplicate names", "POST", chat, body(tools=[tool, tool]), {400}),
        (
            "tools: 129 tools",
            "POST",
            chat,
            body(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]),
            {400},
        ),
        (
            "tools: parameters not an object",
            "POST",
            chat,
            body(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
            {400},
        ),
        ("tool_choice: without tools", "POST", chat, body(tool_choice="required"), {400}),
        ("tool_choice: unknown word", "POST", chat, body(tools=[tool], tool_choice="always"), {400}),
        (
            "tool_choice: names a missing function",
            "POST",
            chat,
            body(tools=[tool], tool_choice={"type": "function", "function": {"name": "other"}}),
            {400},
        ),
        (
            "tool_choice: auto on the served template",
            "POST",
            chat,
            body(tools=[tool], tool_choice="auto"),
            {200, 400},
        ),
        (
            "tool_choice: required",
            "POST",
            chat,
            body(tools=[tool], tool_choice="required", max_tokens=32),
            {200},
        ),
        (
            "tool message without tool_call_id",
            "POST",
            chat,
            body(messages=[*hi, {"role": "tool", "content": "42"}]),
            {400},
        ),
        (
            "tool call arguments not JSON",
            "POST",
            chat,
            body(
                messages=[
                    *hi,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ]
            ),
            {400},
        ),
        (
            "tool_calls on a user turn",
            "POST",
            chat,
            body(messages=[{"role": "user", "content": "x", "tool_calls": []}]),
            {400},
        ),
        ("logprobs: a string", "POST", chat, body(logprobs="yes"), {400}),
        ("top_logprobs: 21", "POST", chat, body(logprobs=True, top_logprobs=21), {400}),
        ("top_logprobs: negative", "POST", chat, body(logprobs=True, top_logprobs=-1), {400}),
        ("top_logprobs without logprobs", "POST", chat, body(top_logprobs=2), {400}),
        (
            "logprobs + top_logprobs, streamed",
            "POST",
            chat,
            body(logprobs=True, top_logprobs=20, stream=True),
            {200},
        ),
        ("completions logprobs: 6", "POST", legacy, prompt(logprobs=6), {400}),
        ("completions logprobs: true", "POST", legacy, prompt(logprobs=True), {400}),
        ("completions logprobs: negative", "POST", legacy, prompt(logprobs=-1), {400}),
        ("completions echo with logprobs", "POST", legacy, prompt(echo=True, logprobs=1), {400}),
        ("completions suffix", "POST", legacy, prompt(suffix="end"), {400}),
        (
            "completions logprobs 5, streamed, n=2",
            "POST",
            legacy,
            prompt(logprobs=5, stream=True, n=2),
            {200},
        ),
        ("n: 0", "POST", chat, body(n=0), {400}),
        ("n: 17", "POST", chat, body(n=17), {400}),
        ("n: 2**40", "POST", chat, body(n=2**40), {400}),
        ("n: a float", "POST", chat, body(n=2.5), {400}),
        ("n: above llm.max_choices", "POST", legacy, prompt(n=5), {400}),
        ("n: 2, streamed", "POST", chat, body(n=2, stream=True), {200}),
        ("logit_bias: key not a token id", "POST", chat, body(logit_bias={"hello": 1}), {400}),
        ("logit_bias: negative key", "POST", chat, body(logit_bias={"-1": 1}), {400}),
        ("logit_bias: value 1000", "POST", chat, body(logit_bias={"1": 1000}), {400}),
        ("logit_bias: id beyond the vocabulary", "POST", chat, body(logit_bias={"99999999": 5}), {400}),
        ("logit_bias: id 2**80", "POST", chat, body(logit_bias={str(2**80): 5}), {400}),
        ("logit_bias: 301 entries", "POST", chat, body(logit_bias={str(i): 1 for i in range(301)}), {400}),
        ("logit_bias: a list", "POST", chat, body(logit_bias=[1, 2]), {400}),
        (
            "logit_bias: NaN",
            "POST",
            chat,
            {
                "headers": {"Content-Type": "application/json"},
                "content": b'{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"1":NaN}}',
            },
            {400},
        ),
        ("logit_bias: ban and force", "POST", legacy, prompt(logit_bias={"1": -100, "2": 100}), {200}),
        ("presence_penalty: 3", "POST", chat, body(presence_penalty=3), {400}),
        ("frequency_penalty: -5", "POST", chat, body(frequency_penalty=-5), {400}),
        ("presence_penalty: a string", "POST", chat, body(presence_penalty="high"), {400}),
        (
            "penalties at their limits",
            "POST",
            legacy,
            prompt(presence_penalty=2, frequency_penalty=-2),
            {200},
        ),
        ("embeddings: token ids", "POST", embed, embeds([[1, 2, 3]]), {200}),
        ("embeddings: one token array", "POST", embed, embeds([101, 7592, 102]), {200}),
        ("embeddings: id beyond the vocabulary", "POST", embed, embeds([[1, 10**9]]), {400}),
        ("embeddings: id 2**70", "POST", embed, embeds([2**70]), {400}),
        ("embeddings: negative id", "POST", embed, embeds([[5, -1]]), {400}),
        ("embeddings: empty token array", "POST", embed, embeds([[1], []]), {400}),
        ("embeddings: empty list", "POST", embed, embeds([]), {400}),
        ("embeddings: texts and ids mixed", "POST", embed, embeds(["grid", [1, 2]]), {400}),
        ("embeddings: ids and a text mixed", "POST", embed, embeds([1, "grid"]), {400}),
        ("embeddings: float ids", "POST", embed, embeds([[1.5, 2]]), {400}),
        ("embeddings: boolean ids", "POST", embed, embeds([[True, False]]), {400}),
        ("embeddings: nested too deep", "POST", embed, embeds([[[1]]]), {400}),
        ("embeddings: token array over the model's limit", "POST", embed, embeds([[1000] * 300]), {400}),
        ("embeddings: 5000 token arrays", "POST", embed, embeds([[1]] * 5000), {400, 413}),
    ]


def finetuning_cases(model: str) -> list[Case]:
    """Bad uploads and job requests for ``/v1/files`` and ``/v1/fine_tuning/jobs``."""
    jobs = "/v1/fine_tuning/jobs"
    good = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'

    def upload(data: bytes, name: str = "t.jsonl", purpose: str | None = "fine-tune") -> dict[str, Any]:
        return {"files": {"file": (name, data)}, "data": {"purpose": purpose} if purpose else {}}

    return [
        ("files: JSON instead of multipart", "POST", "/v1/files", {"json": {"file": "x"}}, {415}),
        (
            "files: no file part",
            "POST",
            "/v1/files",
            {"files": {"other": ("a", b"x")}, "data": {"purpose": "fine-tune"}},
            {400},
        ),
        ("files: no purpose", "POST", "/v1/files", upload(good, purpose=None), {400}),
        ("files: unsupported purpose", "POST", "/v1/files", upload(good, purpose="batch"), {400}),
        ("files: not JSONL", "POST", "/v1/files", upload(b"\x00\xff binary \n{oops\n"), {400}),
        ("files: empty", "POST", "/v1/files", upload(b""), {400}),
        ("files: deeply nested line", "POST", "/v1/files", upload(_nested(30_000) + b"\n"), {400}),
        (
            "files: traversal filename",
            "POST",
            "/v1/files",
            upload(good, name="../../../tmp/adept-evil.jsonl"),
            None,
        ),
        ("files: traversal id", "GET", "/v1/files/..%2F..%2Fetc%2Fpasswd/content", {}, {404}),
        ("files: glob id", "GET", "/v1/files/file-*", {}, {404}),
        ("files: bad order", "GET", "/v1/files", {"params": {"order": "sideways"}}, {400}),
        ("jobs: unknown file", "POST", jobs, {"json": {"model": model, "training_file": "file-nope"}}, {404}),
        (
            "jobs: traversal file id",
            "POST",
            jobs,
            {"json": {"model": model, "training_file": "../../x"}},
            {404},
        ),
        (
            "jobs: dpo",
            "POST",
            jobs,
            {"json": {"model": model, "training_file": "f", "method": {"type": "dpo"}}},
            {400, 404},
        ),
        (
            "jobs: n_epochs huge",
            "POST",
            jobs,
            {"json": {"model": model, "training_file": "f", "hyperparameters": {"n_epochs": 10**12}}},
            {400, 404},
        ),
        (
            "jobs: nested JSON",
            "POST",
            jobs,
            {"headers": {"Content-Type": "application/json"}, "content": _nested(30_000)},
            {400},
        ),
        (
            "jobs: unknown field",
            "POST",
            jobs,
            {"json": {"model": model, "training_file": "f", "lr": 1}},
            {400},
        ),
        ("jobs: traversal id", "GET", f"{jobs}/..%2F..%2Fetc", {}, {404}),
        (
            "jobs: events after unknown id",
            "GET",
            f"{jobs}/ftjob-{'0' * 24}/events",
            {"params": {"after": "x"}},
            {404},
        ),
        ("jobs: limit huge", "GET", jobs, {"params": {"limit": 10**9}}, {400}),
    ]


AUTH_CASES: list[tuple[str, dict[str, str]]] = [
    ("no Authorization", {}),
    ("empty bearer", {"Authorization": "Bearer "}),
    ("basic scheme", {"Authorization": "Basic YWRtaW46YWRtaW4="}),
    ("garbage key", {"Authorization": "Bearer adept-" + "A" * 43}),
    ("10 KB key", {"Authorization": "Bearer adept-" + "k" * 10_000}),
    ("key with CRLF", {"Authorization": "Bearer adept-abc\tdef"}),
    ("SQL in key", {"Authorization": "Bearer adept-' OR '1'='1"}),
]


def targeted_fuzz(url: str, tenant: Any, admin_key: str, model: str, *, data_dir: Any = None) -> Outcome:
    """Run the targeted cases as ``tenant`` (and the auth cases on every route family)."""
    out = Outcome("fuzz: targeted bad inputs")
    started = time.monotonic()
    with canary_listener() as (ssrf, hits), httpx.Client(base_url=url, timeout=120) as c:
        for name, method, path, kwargs, allowed in targeted_cases(tenant, ssrf, model):
            kwargs = dict(kwargs)
            headers = {**tenant.headers(), **kwargs.pop("headers", {})}
            if path.startswith("/admin"):
                headers = {**headers, "Authorization": f"Bearer {admin_key}"}
            r = _send(out, url, name, method, path, headers, kwargs)
            if r is None:
                continue
            _judge(out, name, r, allowed)
            if "x-injected" in {k.lower() for k in r.headers} or "pwned" in r.headers.get("set-cookie", ""):
                out.fail(f"{name}: injected header reached the response")
        for name, headers in AUTH_CASES:
            for method, path in (("GET", "/v1/models"), ("POST", "/v1/kb/search"), ("GET", "/admin/tenants")):
                out.bad_inputs += 1
                try:
                    r = c.request(method, path, headers=headers, json={"query": "x"})
                except (httpx.HTTPError, ValueError) as e:
                    if isinstance(e, httpx.LocalProtocolError):
                        continue  # the client refused to send it
                    out.fail(f"{name} {path}: {type(e).__name__}: {e}")
                    continue
                _judge(out, f"{name} {path}", r, {401})
        time.sleep(0.2)
        if hits:
            out.fail(f"SSRF: the platform fetched {len(hits)} URL(s) it was only given as data: {hits[:5]}")
    if data_dir is not None:
        import pathlib

        if pathlib.Path("/tmp/adept-evil.md").exists():
            out.fail("path traversal: an upload's filename wrote /tmp/adept-evil.md")
    out.load = "sequential"
    out.seconds = time.monotonic() - started
    return out


def features_beside_a_stream(url: str, attacker: Any, victim: Any) -> Outcome:
    """The attacker sends every OpenAI-feature case while the victim's stream is open; the stream stays whole.

    The victim's stream uses the new fields itself (its adapter, ``n=2``, ``logprobs``, a bias): it
    is opened and its first event read before the first bad request, and read to the end after the
    last, so every bad request is answered while the victim's generation is in flight or buffered.
    """
    from bench.reliability.checks import sse_problem

    out = Outcome("fuzz: OpenAI features beside another tenant's stream")
    started = time.monotonic()
    victim_body = {
        "model": victim.adapters[0],
        "messages": [{"role": "user", "content": "Describe the grid repair procedure."}],
        "max_tokens": 48,
        "stream": True,
        "n": 2,
        "logprobs": True,
        "top_logprobs": 2,
        "frequency_penalty": 0.5,
        "stream_options": {"include_usage": True},
    }
    with (
        httpx.Client(base_url=url, timeout=120) as c,
        c.stream("POST", "/v1/chat/completions", json=victim_body, headers=victim.headers()) as stream,
    ):
        if stream.status_code != 200:
            out.fail(f"the victim's stream was refused: {stream.status_code} {stream.read()[:160]!r}")
            return out
        events = stream.iter_bytes()
        body = next(events, b"")
        for name, method, path, kwargs, allowed in openai_feature_cases(attacker.adapters[0]):
            kwargs = dict(kwargs)
            headers = {**attacker.headers(), **kwargs.pop("headers", {})}
            r = _send(out, url, name, method, path, headers, kwargs)
            if r is not None:
                _judge(out, name, r, allowed)
        body += b"".join(events)
    problem = sse_problem(body)
    if problem:
        out.fail(f"the victim's stream: {problem}")
    indices = {
        choice["index"]
        for raw in body.decode().split("\n\n")
        if raw.startswith("data: {")
        for choice in json.loads(raw[6:]).get("choices", [])
    }
    if indices != {0, 1}:
        out.fail(f"the victim's stream carried choices {sorted(indices)}, not [0, 1]")
    out.load = "one victim stream, sequential attacker requests"
    out.seconds = time.monotonic() - started
    return out


def _send(
    out: Outcome, url: str, name: str, method: str, path: str, headers: dict[str, str], kwargs: dict[str, Any]
) -> httpx.Response | None:
    """One bad input, counted; ``None`` (and a failure) when the connection itself failed."""
    out.bad_inputs += 1
    try:
        # A fresh connection per case: one case's broken connection must not fail the next.
        with httpx.Client(base_url=url, timeout=120) as one:
            return one.request(method, path, headers=headers, **kwargs)
    except httpx.HTTPError as e:
        out.fail(f"{name}: connection failed ({type(e).__name__}: {e})")
        return None


def _judge(out: Outcome, name: str, r: httpx.Response, allowed: set[int] | None) -> None:
    problem = response_problem(r.status_code, r.content, r.headers.get("content-type", ""))
    if problem:
        out.fail(f"{name}: {problem}")
    elif allowed is not None and r.status_code not in allowed:
        detail = r.text[:160] if r.status_code >= 400 else ""
        out.fail(f"{name}: status {r.status_code}, expected {sorted(allowed)} {detail}")
    elif r.status_code >= 400 and r.status_code not in (405,) and error_problem(r.status_code, r.content):
        out.fail(f"{name}: {error_problem(r.status_code, r.content)}")


Runner = Callable[..., Outcome]
