"""`python -m operators` argument handling."""

from __future__ import annotations

import pytest

from operators.__main__ import parse_args


def test_namespace_scoped_with_peering_by_default():
    a = parse_args(["--namespace", "adept"])
    assert a.namespace == ["adept"] and not a.all_namespaces and a.peering == "adept" and not a.standalone


def test_cluster_wide_standalone():
    a = parse_args(["-A", "--standalone", "--liveness", ""])
    assert a.all_namespaces and a.standalone and a.liveness == ""


def test_scope_is_required_unless_pod_namespace(monkeypatch):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with pytest.raises(SystemExit):
        parse_args([])
    monkeypatch.setenv("POD_NAMESPACE", "rel")
    assert parse_args([]).namespace == ["rel"]


def test_namespace_and_all_namespaces_exclude_each_other():
    with pytest.raises(SystemExit):
        parse_args(["-n", "a", "-A"])
