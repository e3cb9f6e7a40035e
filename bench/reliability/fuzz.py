"""Bad input, politely refused: schemathesis over the gateway's OpenAPI schema, then targeted cases.

Every response must be < 500 and every error OpenAI-style JSON; streams must be complete.
The server must also never act on what it is sent: a URL in a document is never fetched
(a loopback listener counts connections), a header injected through ``model`` never becomes
a response header, and ``../`` in a name never reaches the filesystem.
"""

from __future__ import annotations

import http.server
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
        (
            "embeddings: token ids",
            "POST",
            "/v1/embeddings",
            {"json": {"model": "embedding", "input": [[1, 2, 3]]}},
            {400},
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
    ]
    return cases


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
            out.bad_inputs += 1
            try:
                # A fresh connection per case: one case's broken connection must not fail the next.
                with httpx.Client(base_url=url, timeout=120) as one:
                    r = one.request(method, path, headers=headers, **kwargs)
            except httpx.HTTPError as e:
                out.fail(f"{name}: connection failed ({type(e).__name__}: {e})")
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
