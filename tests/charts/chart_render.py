"""Render charts/adept with the embedded Helm SDK and validate what comes out.

Kubernetes kinds are checked against the official schemas (kubernetes-validate, strict: unknown
fields are errors), KubeRay kinds against the real CRDs of exactly the KubeRay version Chart.yaml pins
(shared/crds/kuberay/v<version>/, ``shared_dir``), our
kinds against charts/adept/crds; either missing is a failure, never a skip. CRD schemas are made strict the way `kubectl apply --validate=strict` treats them:
an unknown field where the schema lists properties is an error.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from adept.config.base import deep_merge

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "adept"
OUR_CRDS_DIR = CHART_DIR / "crds"
K8S_VERSION = (
    "1.30"  # oldest minor the chart supports well (kubeVersion >=1.27); kubernetes-validate ships it
)
VALUES_FILES = {
    "default": None,
    "cpu-dev": "values-cpu-dev.yaml",
    "gpu-prod": "values-gpu-prod.yaml",
    "ci": "ci/ci-values.yaml",
}
K8S_GROUPS = {
    "v1",
    "apps/v1",
    "apiextensions.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "networking.k8s.io/v1",
    "policy/v1",
    "batch/v1",
}


def _main_checkout() -> Path | None:
    """The main checkout when ``REPO_ROOT`` is a git worktree of it (its git dir's parent), else None."""
    try:
        common = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git binary, or not a git checkout (an sdist)
        return None
    return Path(common).parent if common else None


def shared_candidates() -> list[Path]:
    """Where ``shared/`` may be: ``$SHARED_DIR`` alone when set, else beside this checkout or its main one."""
    if os.environ.get("SHARED_DIR"):
        return [Path(os.environ["SHARED_DIR"])]
    found = [REPO_ROOT.parent / "shared", REPO_ROOT / "shared"]
    main = _main_checkout()
    if main is not None:
        found.append(main.parent / "shared")  # a worktree elsewhere: the main checkout's ../shared
    return list(dict.fromkeys(p.resolve() for p in found))


@functools.cache
def shared_dir() -> Path:
    """The ``shared/`` folder holding ``crds/kuberay``.

    Raises:
        FileNotFoundError: no candidate holds KubeRay CRDs; the message lists every place looked.
    """
    candidates = shared_candidates()
    for cand in candidates:
        if any((cand / "crds" / "kuberay").glob("*.yaml")):
            return cand
    looked = ", ".join(str(c / "crds" / "kuberay") for c in candidates)
    raise FileNotFoundError(
        f"KubeRay CRDs not found (looked in {looked}): set SHARED_DIR to the folder that holds crds/kuberay"
    )


@functools.cache
def chart():
    import helm_python

    return helm_python.Chart.load(str(CHART_DIR))


def values_for(profile: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """User values of a profile (the -f file), with ``extra`` merged on top (a second -f)."""
    rel = VALUES_FILES[profile]
    data = yaml.safe_load((CHART_DIR / rel).read_text()) if rel else {}
    return deep_merge(data or {}, extra or {})


def render(
    values: dict[str, Any] | None = None,
    *,
    name: str = "adept",
    namespace: str = "adept",
    api_versions: list[str] | None = None,
) -> dict[str, str]:
    """Template path (``adept/templates/x.yaml``) -> rendered text.

    ``api_versions`` are what ``.Capabilities.APIVersions`` reports besides the built-in ones (``helm
    template --api-versions``); the SDK's Go side takes them, its Python wrapper does not expose them.
    """
    if not api_versions:
        return chart().render(values or {}, name=name, namespace=namespace)
    import json

    from helm_python import _native

    opts = {"name": name, "namespace": namespace, "api_versions": api_versions}
    raw = _native.call_string("helm_render", chart()._raw(), json.dumps(values or {}), json.dumps(opts))
    return json.loads(raw)


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        out.extend(d for d in yaml.safe_load_all(text) if d)
    return out


def render_objects(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    return objects(render(values, **kw))


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def _strict(node: Any) -> Any:
    """Close every object schema that lists properties (unknown fields become errors)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def crd_validators(paths: list[Path]) -> dict[tuple[str, str], jsonschema.Validator]:
    """(apiVersion, kind) -> validator for every served version of the CRDs in ``paths``."""
    out = {}
    for path in paths:
        # The C loader: the KubeRay CRDs are ~60k lines, 10x slower with the pure-Python one.
        for crd in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return out


def kuberay_pin() -> str:
    """The kuberay-operator version ``Chart.yaml`` pins (its dependency entry)."""
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    versions = [d["version"] for d in meta.get("dependencies") or [] if d["name"] == "kuberay-operator"]
    assert len(versions) == 1, f"Chart.yaml must pin kuberay-operator exactly once, found {versions}"
    return str(versions[0])


def kuberay_crd_dir(version: str | None = None) -> Path:
    """``shared/crds/kuberay/v<version>/``: the CRDs KubeRay's chart ships at exactly that release.

    Raises:
        FileNotFoundError: the pinned version has no folder (a pin the tests cannot check is a failure).
    """
    version = version or kuberay_pin()
    path = shared_dir() / "crds" / "kuberay" / f"v{version}"
    if not any(path.glob("ray.io_*.yaml")):
        have = sorted(p.name for p in path.parent.glob("v*") if p.is_dir())
        raise FileNotFoundError(
            f"Chart.yaml pins kuberay-operator {version}, but {path} holds no CRDs (have: {', '.join(have)}): "
            "add KubeRay's helm-chart/kuberay-operator/crds/ at that tag, unchanged"
        )
    return path


@functools.cache
def kuberay_validators(version: str | None = None) -> dict[tuple[str, str], jsonschema.Validator]:
    """Validators from the CRDs of exactly the pinned KubeRay version (or ``version``)."""
    return crd_validators(sorted(kuberay_crd_dir(version).glob("*.yaml")))


def our_crd_files() -> list[Path]:
    """The generated CRDs in charts/adept/crds.

    Raises:
        FileNotFoundError: there are none (``make sync`` generates them; the chart would ship none).
    """
    files = sorted(OUR_CRDS_DIR.glob("*.y*ml"))
    if not files:
        raise FileNotFoundError(f"{OUR_CRDS_DIR} holds no CRDs: run `make sync` (python -m adept.codegen)")
    return files


@functools.cache
def our_validators() -> dict[tuple[str, str], jsonschema.Validator]:
    return crd_validators(our_crd_files())


def validation_errors(obj: dict[str, Any], kuberay_version: str | None = None) -> list[str]:
    """Schema problems of one rendered object (empty: valid). Raises LookupError for a kind nobody knows.

    KubeRay kinds are checked against the pinned version's CRDs, or ``kuberay_version``'s.
    """
    import kubernetes_validate

    api, kind = obj["apiVersion"], obj["kind"]
    if api in K8S_GROUPS:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            return [f"{kind}/{obj['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"]
        return []
    validator = kuberay_validators(kuberay_version).get((api, kind)) or our_validators().get((api, kind))
    if validator is None:
        raise LookupError(f"no schema for {api} {kind}")
    return [
        f"{kind}/{obj['metadata']['name']}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod template an object carries."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in ("Deployment", "Job"):
        yield "template", spec["template"]["spec"]
    cluster = spec.get("rayClusterConfig", spec) if kind in ("RayService", "RayCluster") else None
    if cluster:
        yield "head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs") or []:
            yield group["groupName"], group["template"]["spec"]


def ray_cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["rayClusterConfig"] if obj["kind"] == "RayService" else obj["spec"]


def worker_group(obj: dict[str, Any], name: str) -> dict[str, Any]:
    groups = {g["groupName"]: g for g in ray_cluster_spec(obj).get("workerGroupSpecs") or []}
    assert name in groups, f"{obj['kind']} has worker groups {sorted(groups)}, not {name}"
    return groups[name]
