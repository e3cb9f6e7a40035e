"""`helm lint` (Helm's Go SDK, embedded) finds nothing but the not-yet-fetched dependency charts."""

import pytest

from tests.charts.chart_render import CHART_DIR, values_for

pytestmark = pytest.mark.charts

# `make chart-deps` fetches them where the network allows; the templates render without them.
MISSING_DEPS = "chart directory is missing these dependencies"


def test_lint_clean(profile):
    import helm_python

    report = helm_python.lint(str(CHART_DIR), values_for(profile), strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2 and MISSING_DEPS not in m["error"]]
    assert not problems, problems
    assert all(MISSING_DEPS in e for e in report["errors"]), report["errors"]


def test_dependencies_are_pinned_with_conditions():
    import helm_python

    meta = helm_python.Chart.load(str(CHART_DIR)).metadata
    deps = {d["name"]: d for d in meta["dependencies"]}
    assert set(deps) == {"kuberay-operator", "milvus"}
    for name, dep in deps.items():
        assert dep["condition"] == f"{name}.enabled"
        assert dep["repository"].startswith("https://")
        assert all(part.isdigit() for part in dep["version"].split(".")), dep["version"]  # exact pin


def test_renders_with_dependencies_disabled():
    """Bring-your-own KubeRay and Milvus."""
    from tests.charts.chart_render import render_objects

    objs = render_objects(
        {
            "kuberay-operator": {"enabled": False},
            "milvus": {"enabled": False},
            "externalMilvus": {"uri": "http://milvus.db.svc:19530", "existingSecret": "milvus-token"},
        }
    )
    assert not [o for o in objs if o["metadata"]["name"].endswith("-milvus") and o["kind"] == "NetworkPolicy"]
    rs = next(o for o in objs if o["kind"] == "RayService")
    assert "http://milvus.db.svc:19530" in rs["spec"]["serveConfigV2"]
    env = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "ADEPT_PLATFORM__MILVUS_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "milvus-token", "key": "token"}


def test_own_milvus_without_uri_fails_clearly():
    import helm_python

    from tests.charts.chart_render import render

    with pytest.raises(helm_python.HelmError, match=r"externalMilvus\.uri"):
        render({"milvus": {"enabled": False}})
