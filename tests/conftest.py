"""Fixtures every tier shares: offline mode, tiny models, the bundled model, short temp dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Never reach a model hub from a test; keep native thread pools small on 2-core CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
# Built models are cached between test runs (and between parallel test processes) here.
CACHE_DIR = Path(os.environ.get("ADEPT_TEST_CACHE", REPO_ROOT / ".cache" / "test-assets"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_phi3() -> Path:
    """Directory of a tiny random Phi-3 with a real BPE tokenizer and chat template."""
    from tests.assets.tiny_models import cached_tiny_phi3

    return cached_tiny_phi3(CACHE_DIR)


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    """The bundled SmolLM2-135M-Instruct, converted from its GGUF once and cached (integration tier)."""
    from adept.config.platform import BUNDLED_MODEL
    from adept.models import resolve_model

    return resolve_model(BUNDLED_MODEL, CACHE_DIR / "models")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty Adept data dir for one test."""
    d = tmp_path / "adept-data"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def short_tmp() -> Path:
    """A short temp dir for Ray (its unix socket paths must stay under ~107 characters)."""
    d = Path(tempfile.mkdtemp(prefix="adept-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- expensive things shared by consecutive tests of several modules (tests/shared_platforms.py) ------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    from tests.shared_platforms import release_unused

    try:
        return (yield)  # the test's own fixtures first: they may still talk to the shared platform
    finally:
        release_unused(nextitem)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A shared platform's users run one after another, so one platform serves them all."""
    from tests.shared_platforms import group_users

    group_users(items)


@pytest.fixture(scope="session")
def demo_platform(tiny_phi3: Path) -> Callable[[], Any]:
    """Gets ``adept up --demo`` on the tiny Phi-3 (local Ray, Serve, Milvus Lite, the demo tenant and
    corpus), started for the first of the consecutive tests that ask for it and stopped after the last
    (tests/integration/eval/test_eval_e2e.py, tests/browser)."""
    from tests.shared_platforms import shared, start_demo_platform, stop_platform, uses_demo_platform

    return lambda: shared(
        "demo_platform", lambda: start_demo_platform(tiny_phi3), stop_platform, uses_demo_platform
    )


@pytest.fixture(scope="session")
def bundled_platform(bundled_model: Path) -> Callable[[], Any]:
    """Gets the embedded platform serving the bundled SmolLM2-135M-Instruct (admin key
    ``tests.shared_platforms.BUNDLED_ADMIN_KEY``), shared by the consecutive tests that ask for it
    (tests/integration/finetuning/test_openai_finetune.py, tests/integration/gateway/test_openai_features.py)."""
    from tests.shared_platforms import shared, start_bundled_platform, stop_platform, uses_bundled_platform

    return lambda: shared(
        "bundled_platform",
        lambda: start_bundled_platform(bundled_model),
        stop_platform,
        uses_bundled_platform,
    )
