"""Generated CRDs: in sync with the models, structural, valid, and the examples validate against them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from operators import crdgen
from operators.models import KINDS

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "charts" / "adept" / "crds"


def test_checked_in_crds_match_the_generator():
    rendered = crdgen.render_crds()
    on_disk = {
        p.name: p.read_text() for p in CRD_DIR.glob("*.yaml") if p.read_text().startswith(crdgen.HEADER)
    }
    assert on_disk == rendered, "CRDs drifted from operators/models.py: run `make sync`"


def test_write_crds_is_idempotent_and_removes_stale_files(tmp_path):
    crd_dir = tmp_path / "charts" / "adept" / "crds"
    crd_dir.mkdir(parents=True)
    (crd_dir / "old.adept.dev.yaml").write_text(crdgen.HEADER + "kind: Gone\n")
    (crd_dir / "hand-written.yaml").write_text("kind: Kept\n")
    first = crdgen.write_crds(tmp_path)
    assert {p.name for p in first} == set(crdgen.render_crds())
    assert not (crd_dir / "old.adept.dev.yaml").exists() and (crd_dir / "hand-written.yaml").exists()
    snapshot = {p: p.read_text() for p in first}
    crdgen.write_crds(tmp_path)
    assert snapshot == {p: p.read_text() for p in first}


def _crds() -> dict[str, dict[str, Any]]:
    return {
        k.kind: yaml.safe_load((CRD_DIR / f"{k.plural}.adept.dev.yaml").read_text()) for k in KINDS.values()
    }


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key in ("properties", "additionalProperties"):
            sub = node.get(key)
            if isinstance(sub, dict):
                if key == "properties":
                    for k, v in sub.items():
                        yield from _walk(v, f"{path}.{k}")
                else:
                    yield from _walk(sub, f"{path}[*]")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")


FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "default", "const", "uniqueItems"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_is_structural(kind):
    schema = _crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not FORBIDDEN & set(node), f"{kind}{path}: {FORBIDDEN & set(node)}"
        assert node.get("additionalProperties") is not False, f"{kind}{path}"
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{kind}{path} has no type"
        if isinstance(node.get("exclusiveMinimum"), bool):
            assert "minimum" in node


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_metadata_columns_and_status(kind):
    crd = _crds()[kind]
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["group"] == "adept.dev" and version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    assert "Ready" in [c["name"] for c in version["additionalPrinterColumns"]]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    cond = status["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "lastTransitionTime"} <= set(cond)


def test_training_config_is_embedded_without_tenant_and_adapter():
    spec = _crds()["FineTuneJob"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    config = spec["properties"]["config"]
    assert "lora" in config["properties"] and "tenant" not in config["properties"]
    assert config["required"] == ["data"]
    assert spec["properties"]["config"]["properties"]["deepspeed"]["properties"]["stage"]["enum"] == [0, 2, 3]


def test_crds_are_valid_kubernetes_objects():
    import kubernetes_validate

    for path in CRD_DIR.glob("*.yaml"):
        kubernetes_validate.validate(yaml.safe_load(path.read_text()), "1.30.0", strict=True)


def _to_jsonschema(node: Any) -> Any:
    """Back from Kubernetes' OpenAPI dialect to JSON Schema, to validate manifests offline."""
    if isinstance(node, list):
        return [_to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes") and k != "nullable"
    }
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    if isinstance(node.get("exclusiveMinimum"), bool):
        out.pop("exclusiveMinimum")
        out["exclusiveMinimum"] = out.pop("minimum")
    if isinstance(node.get("exclusiveMaximum"), bool):
        out.pop("exclusiveMaximum")
        out["exclusiveMaximum"] = out.pop("maximum")
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_against_the_generated_crds(path):
    crds = _crds()
    for doc in yaml.safe_load_all(path.read_text()):
        schema = _to_jsonschema(crds[doc["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        jsonschema.validate(doc, schema)


def test_crd_schema_rejects_what_the_api_server_should():
    schema = _to_jsonschema(_crds()["Tenant"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    bad = {
        "apiVersion": "adept.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "t"},
        "spec": {"quotas": {"max_adapters": -1}},
    }
    with pytest.raises(jsonschema.ValidationError, match="minimum"):
        jsonschema.validate(bad, schema)


def test_to_structural_conversions():
    defs = {"M": {"type": "object", "title": "M", "properties": {"a": {"type": "integer", "default": 1}}}}
    node = {
        "type": "object",
        "properties": {
            "ref": {"$ref": "#/$defs/M", "description": "field doc"},
            "opt": {"anyOf": [{"type": "string", "format": "path"}, {"type": "null"}]},
            "ios": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "free": {"type": "object", "additionalProperties": True},
            "pos": {"type": "number", "exclusiveMinimum": 0},
            "lit": {"enum": [1, 2]},
        },
    }
    out = crdgen.to_structural(node, defs)["properties"]
    assert out["ref"] == {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "description": "field doc",
    }
    assert out["opt"] == {"type": "string", "nullable": True}
    assert out["ios"] == {"x-kubernetes-int-or-string": True}
    assert out["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert out["pos"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert out["lit"] == {"enum": [1, 2], "type": "integer"}
