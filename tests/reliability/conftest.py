"""One in-process platform per session (tests clean up after themselves): the gateway's real app over the real engine, KB and stores."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from bench.reliability.inproc import serving_config, start_inprocess
from bench.reliability.seed import make_lora, seed_tenants


@pytest.fixture(scope="session")
def embedder():
    from services.retrieval.embedding import Embedder

    return Embedder("bundled:all-minilm-l6-v2", batch_size=32)


@pytest.fixture(scope="session")
def lora_dir(tiny_phi3: Path, tmp_path_factory) -> Path:
    return make_lora(tiny_phi3, tmp_path_factory.mktemp("lora") / "lora", seed=1)


@pytest.fixture(scope="session")
def platform(tiny_phi3: Path, tmp_path_factory, embedder):
    cfg = serving_config(tmp_path_factory.mktemp("data"), tiny_phi3)
    p = start_inprocess(cfg, "adept-admin-" + secrets.token_urlsafe(24), embedder=embedder)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def tenants(platform, lora_dir):
    return seed_tenants(platform.url, platform.admin_key, lora_dir, n=3)
