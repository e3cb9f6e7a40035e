"""Fixtures every tier shares: offline mode, tiny models, the bundled model, short temp dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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
