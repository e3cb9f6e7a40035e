"""A fast seeded fuzzer over the OpenAPI document: schema-shaped bodies, mutated with hostile values.

schemathesis (``fuzz.schema_fuzz``) explores more but spends seconds per operation generating
cases; this walks every operation x auth variant in a few hundred milliseconds each, so it fits
the test tier. Same verdict: no 5xx, every error OpenAI-style JSON, streams complete.
"""

from __future__ import annotations

import random
import time
from typing import Any
from urllib.parse import quote

import httpx

from bench.reliability.checks import response_problem
from bench.reliability.report import Outcome

HOSTILE: list[Any] = [
    "",
    " ",
    "../../../etc/passwd",
    "..%2F..%2Fadapters",
    "a/../../b",
    "\x00",
    "\x1b[31m\x07",
    "x\r\nX-Injected: 1",
    "a" * 5000,
    "😀🔥" * 50,
    "\u202eevil",
    "' OR '1'='1",
    '" or tenant != "',
    "${jndi:ldap://127.0.0.1/a}",
    "{{7*7}}",
    "http://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "adept-" + "A" * 43,
    -1,
    0,
    2**63,
    -(2**63) - 1,
    10**30,
    1e308,
    -0.0,
    True,
    None,
    [],
    {},
    [[[[[[]]]]]],
    {"$ref": "#/x"},
]


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    # Bodies embedded with openapi_extra keep pydantic's "#/$defs/..." refs: look in root["$defs"] too.
    while isinstance(schema, dict) and "$ref" in schema:
        node: Any = root
        try:
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
        except (KeyError, TypeError):
            return {}
        schema = node
    return schema


def instance(schema: dict[str, Any], root: dict[str, Any], rng: random.Random, depth: int = 0) -> Any:
    """A value shaped by ``schema`` (enough to get past parsing into the logic layer)."""
    schema = _resolve(schema, root)
    if depth > 6 or not isinstance(schema, dict):
        return None
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return instance(rng.choice(schema[key]), root, rng, depth + 1)
    if "allOf" in schema:
        return instance(schema["allOf"][0], root, rng, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "examples" in schema and rng.random() < 0.5:
        return rng.choice(schema["examples"])
    if "default" in schema and rng.random() < 0.3:
        return schema["default"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = rng.choice(kind)
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return {
            k: instance(v, root, rng, depth + 1)
            for k, v in props.items()
            if k in required or rng.random() < 0.5
        }
    if kind == "array":
        n = rng.randint(max(1, schema.get("minItems", 0)), max(1, min(schema.get("maxItems", 3), 3)))
        return [instance(schema.get("items", {}), root, rng, depth + 1) for _ in range(n)]
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(min(schema.get("maximum", 64), 64)))
    if kind == "number":
        return round(rng.uniform(float(schema.get("minimum", 0)), float(min(schema.get("maximum", 1), 1))), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return rng.choice(["hello", "What is the torque?", "grid", "v1", "acme"])


def mutate(value: Any, rng: random.Random) -> Any:
    """Replace one leaf (or the whole value) with a hostile value."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        return {**value, key: mutate(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], mutate(value[i], rng), *value[i + 1 :]]
    if isinstance(value, dict) and rng.random() < 0.3:
        return {**value, rng.choice(["extra", "__proto__", "$where"]): rng.choice(HOSTILE)}
    return rng.choice(HOSTILE)


def _body_schema(op: dict[str, Any]) -> dict[str, Any] | None:
    content = (op.get("requestBody") or {}).get("content", {})
    return (content.get("application/json") or {}).get("schema")


def walk(url: str, keys: dict[str, str], *, cases_per_variant: int = 4, seed: int = 0) -> Outcome:
    """Every operation x {no key, garbage key, tenant key, admin key} x ``cases_per_variant`` cases."""
    rng = random.Random(seed)
    out = Outcome("fuzz: OpenAPI schema walk (seeded)")
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=120) as c:
        spec = c.get("/openapi.json").json()
        ops = [(m.upper(), p, op) for p, item in spec["paths"].items() for m, op in item.items()]
        variants = {"none": {}, "garbage": {"Authorization": "Bearer adept-" + "Z" * 43}}
        variants |= {name: {"Authorization": f"Bearer {k}"} for name, k in keys.items()}
        for method, template, op in ops:
            schema = _body_schema(op)
            params = [p for p in op.get("parameters", []) if p.get("in") == "path"]
            queries = [p for p in op.get("parameters", []) if p.get("in") == "query"]
            for variant, headers in variants.items():
                for i in range(cases_per_variant):
                    hostile = i % 2 == 1
                    path = template
                    for p in params:
                        v = rng.choice(HOSTILE) if hostile else instance(p.get("schema", {}), spec, rng)
                        path = path.replace("{" + p["name"] + "}", quote(str(v), safe="") or "x")
                    query = {q["name"]: str(rng.choice(HOSTILE)) for q in queries if hostile}
                    kwargs: dict[str, Any] = {"params": query}
                    if schema is not None:
                        body = instance(schema, {**spec, "$defs": schema.get("$defs", {})}, rng)
                        kwargs["json"] = mutate(body, rng) if hostile else body
                    out.bad_inputs += hostile or variant != "tenant"
                    try:
                        r = c.request(method, path, headers=headers, **kwargs)
                    except (ValueError, httpx.LocalProtocolError):
                        continue  # the client refused to send it
                    except httpx.HTTPError as e:
                        out.fail(f"{method} {path} [{variant}]: connection failed ({type(e).__name__})")
                        continue
                    problem = response_problem(r.status_code, r.content, r.headers.get("content-type", ""))
                    if problem:
                        out.fail(f"{method} {template} [{variant}] {str(kwargs)[:200]}: {problem}")
    out.load = f"{len(ops)} operations x {len(variants)} auth x {cases_per_variant}"
    out.details = {"operations": [f"{m} {p}" for m, p, _ in ops]}
    out.seconds = time.monotonic() - started
    return out
