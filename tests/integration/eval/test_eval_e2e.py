"""``adept eval`` end to end against a REAL gateway (embedded platform: local Ray, Milvus Lite, tiny Phi-3).

The demo platform (shared with tests/browser: tests/shared_platforms.py) has the demo tenant (the Lumen Grid corpus
ingested); a random LoRA adapter on the tiny model is published for the demo tenant so all
four routes run. The tiny model's answers are noise, so this checks the plumbing (routes,
retrieval, citations, skipping, reports, determinism), not answer quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adept.demo import eval_questions_path

pytestmark = pytest.mark.integration

N_QUESTIONS = 6


@pytest.fixture(scope="module")
def platform(demo_platform):
    """``adept up --demo`` on the tiny Phi-3, shared with tests/browser (tests/shared_platforms.py)."""
    return demo_platform()


def _admin(platform, method: str, path: str, **kw):
    import httpx

    r = httpx.request(
        method,
        platform.url + path,
        headers={"Authorization": f"Bearer {platform.admin_key}"},
        timeout=120,
        **kw,
    )
    assert r.status_code < 300, r.text
    return r.json()


@pytest.fixture(scope="module")
def demo_adapter(platform, tiny_phi3: Path, tmp_path_factory) -> str:
    """A random LoRA on the tiny Phi-3, published for the demo tenant as ``lumen-style``."""
    from tests.shared_platforms import lumen_style

    return lumen_style(platform, tiny_phi3, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    lines = eval_questions_path().read_text(encoding="utf-8").splitlines()[:N_QUESTIONS]
    path = tmp_path_factory.mktemp("q") / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cli(*args: str):
    from typer.testing import CliRunner

    from tools.cli import app

    return CliRunner().invoke(app, ["eval", *args])


def test_all_four_routes_through_the_public_api(
    platform, demo_adapter: str, questions: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = _cli(
        "--questions", str(questions), "--url", platform.url, "--api-key", platform.demo_key,
        "--max-tokens", "8", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    routes = {r["name"]: r for r in report["routes"]}
    assert all(r["skipped"] is None for r in routes.values()), [r["skipped"] for r in routes.values()]
    assert routes["lora"]["model"] == demo_adapter
    for name in ("rag", "rag+lora"):
        metrics = routes[name]["summary"]["metrics"]
        # Real retrieval (MiniLM + Milvus Lite) on the Lumen Grid questions finds the right documents.
        assert metrics["hit_at_k"]["mean"] >= 0.5
        assert "citation_precision" in metrics  # the answers came back with citations
        assert all(q["cited_documents"] for q in routes[name]["questions"])
        assert (
            routes[name]["summary"]["tokens"]["prompt_mean"]
            > routes["base"]["summary"]["tokens"]["prompt_mean"]
        )
    assert report["retrieval"]["n"] == N_QUESTIONS
    assert report["recommendation"]["route"] in routes
    for name in ("report.md", "metrics.png", "latency.png"):
        assert (out / name).stat().st_size > 0
    assert "Recommended route" in result.output


def test_answers_are_deterministic(platform, questions: Path) -> None:
    from adept.evalset import load_eval_set
    from tools.eval.client import PlatformClient
    from tools.eval.routes import Decoding, parse_route_names
    from tools.eval.runner import EvalOptions, run_eval

    s = load_eval_set(questions)
    s = s.model_copy(update={"items": s.items[:3]})
    opts = EvalOptions(routes=parse_route_names("base,rag"), decoding=Decoding(max_tokens=8), n_resamples=200)
    with PlatformClient(platform.url, platform.demo_key) as client:
        first, second = (run_eval(client, s, opts, progress=False) for _ in range(2))
    preds = [[q["prediction"] for q in r["questions"]] for r in first["routes"]]
    assert preds == [[q["prediction"] for q in r["questions"]] for r in second["routes"]]
    assert first["recommendation"] == second["recommendation"]


def test_new_tenant_gets_rag_and_adapter_routes_skipped(platform, questions: Path, tmp_path: Path) -> None:
    key = _admin(platform, "POST", "/admin/tenants", json={"name": "eval-empty"})["api_key"]
    out = tmp_path / "report"
    result = _cli(
        "--questions", str(questions), "--url", platform.url, "--api-key", key,
        "--max-tokens", "4", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    routes = {r["name"]: r for r in report["routes"]}
    assert routes["base"]["skipped"] is None and len(routes["base"]["questions"]) == N_QUESTIONS
    assert "knowledge base is empty" in routes["rag"]["skipped"]
    assert "no adapter" in routes["lora"]["skipped"]
    assert (
        "knowledge base is empty" in routes["rag+lora"]["skipped"]
        and "no adapter" in routes["rag+lora"]["skipped"]
    )
    assert report["recommendation"]["route"] == "base"
    assert "skipped" in result.output


def test_unknown_adapter_is_reported_as_skipped(
    platform, demo_adapter: str, questions: Path, tmp_path: Path
) -> None:
    result = _cli(
        "--questions", str(questions), "--url", platform.url, "--api-key", platform.demo_key,
        "--routes", "base,lora", "--adapter", "nope", "--max-tokens", "4", "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lora = next(
        r for r in json.loads((tmp_path / "report.json").read_text())["routes"] if r["name"] == "lora"
    )
    assert f"'nope' is not among the tenant's adapters ({demo_adapter})" in lora["skipped"]


def test_adept_ask_from_a_subdirectory_finds_the_platform_and_uses_rag(platform, tmp_path, monkeypatch):
    """What a newcomer does in a second terminal after `make run`: no URL, no key, no flags."""
    from typer.testing import CliRunner

    from tools.cli import app

    for var in ("ADEPT_URL", "ADEPT_API_KEY", "ADEPT_DATA_DIR", "ADEPT_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    project = tmp_path / "project"
    (project / "docs" / "deep").mkdir(parents=True)
    (project / ".adept").symlink_to(platform.config.platform.data_dir)  # where `make run` keeps its state
    monkeypatch.chdir(project / "docs" / "deep")
    runner = CliRunner()
    question = "How much is the Lumen Grid Outage Guarantee credit?"
    with_rag = runner.invoke(app, ["ask", "--max-tokens", "8", question])
    assert with_rag.exit_code == 0, with_rag.output
    assert "Sources" in with_rag.output and "Lumen Grid Co." in with_rag.output  # the demo documents
    without = runner.invoke(app, ["ask", "--no-rag", "--max-tokens", "8", question])
    assert without.exit_code == 0, without.output
    assert "Sources" not in without.output
