"""Spec models: what they accept, what they refuse and how they say it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adept.errors import ConfigError
from operators.models import KINDS, FineTuneJobSpec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates(path):
    for doc in yaml.safe_load_all(path.read_text()):
        parse_spec(doc["kind"], doc["spec"])


def test_examples_cover_all_four_kinds():
    kinds = {d["kind"] for p in EXAMPLES.glob("*.yaml") for d in yaml.safe_load_all(p.read_text())}
    assert kinds == set(KINDS)


def test_tenant_bad_quota_lists_field_and_value():
    with pytest.raises(ConfigError) as e:
        parse_spec("Tenant", {"quotas": {"requests_per_minute": -1, "tokens_per_minut": 5}})
    text = str(e.value)
    assert "quotas.requests_per_minute" in text and "-1" in text
    assert "quotas.tokens_per_minut: unknown field" in text
    assert len(e.value.errors) == 2  # all problems at once


def test_tenant_key_rotation_accepts_counter_or_date():
    assert parse_spec("Tenant", {"keyRotation": 3}).key_rotation == 3
    assert parse_spec("Tenant", {"keyRotation": "2026-01-01"}).key_rotation == "2026-01-01"


def test_camel_case_fields_and_unknown_keys():
    assert (
        parse_spec(
            "KnowledgeBase", {"tenant": "acme", "sources": [{"path": "a"}], "resyncPeriod": 60}
        ).resync_period
        == 60
    )
    with pytest.raises(ConfigError, match="resyncPeriodd: unknown field"):
        parse_spec("KnowledgeBase", {"tenant": "acme", "sources": [{"path": "a"}], "resyncPeriodd": 60})


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ({}, "exactly one of path, s3, documents"),
        ({"path": "a", "documents": [{"text": "x"}]}, "exactly one"),
        ({"path": "../other-tenant"}, "no '..'"),
        ({"s3": {"uri": "http://bucket"}}, "String should match pattern"),
    ],
)
def test_knowledge_base_source_rules(source, match):
    with pytest.raises(ConfigError, match=match):
        parse_spec("KnowledgeBase", {"tenant": "acme", "sources": [source]})


def test_tenant_names_are_checked_everywhere():
    for kind, spec in [
        ("KnowledgeBase", {"tenant": "Bad_Name", "sources": [{"path": "a"}]}),
        ("Adapter", {"tenant": "admin", "name": "a"}),
        ("FineTuneJob", {"tenant": "-x", "adapter": "a", "config": {}}),
    ]:
        with pytest.raises(ConfigError, match="tenant"):
            parse_spec(kind, spec)


def test_adapter_versions_must_look_like_vN():
    with pytest.raises(ConfigError, match="use v<N>"):
        parse_spec("Adapter", {"tenant": "acme", "name": "a", "activeVersion": "3"})


def _job(**config):
    return FineTuneJobSpec.model_validate(
        {"tenant": "acme", "adapter": "tech", "config": {"data": {"path": "d.jsonl"}, **config}}
    )


def test_job_config_takes_tenant_and_adapter_from_the_spec():
    cfg = _job().job_config(adapter_store_uri="/reg")
    assert (cfg.tenant, cfg.adapter, cfg.resolved_adapter_store) == ("acme", "tech", "/reg")


def test_job_config_keeps_an_explicit_store():
    assert (
        _job(output={"adapter_store_uri": "/mine"})
        .job_config(adapter_store_uri="/reg")
        .resolved_adapter_store
        == "/mine"
    )


def test_job_config_refuses_a_cross_tenant_config():
    with pytest.raises(ConfigError, match=r"config.tenant: 'other' differs from spec.tenant 'acme'"):
        _job(tenant="other").job_config()


def test_job_config_reports_training_config_errors_at_once():
    with pytest.raises(ConfigError) as e:
        _job(method="dora", train={"epochs": 0}).job_config()
    assert {"method", "train.epochs"} <= {line.split(":")[0] for line in e.value.errors}
