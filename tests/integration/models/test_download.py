"""``adept models pull --download`` and ``adept models wait``: what the chart's weights Job and init containers run.

The real ``huggingface_hub`` client fetches from a hub emulator on loopback (``hub_server.py``; the real
hub is unreachable here) into a temporary ``HF_HOME``; every command runs the installed CLI in its own
process, as the Job's and the init container's do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.models.hub_server import HubServer, Repo

pytestmark = pytest.mark.integration

TOKEN = "hf_test_token_123"


@pytest.fixture(scope="module")
def hub(tiny_phi3: Path):
    served = Repo.from_dir(tiny_phi3, skip=("adept_model.json",))
    gated = Repo.from_dir(tiny_phi3, skip=("adept_model.json",), token=TOKEN)
    with HubServer({"acme/tiny-phi3": served, "acme/gated-phi3": gated}) as server:
        yield server


def run(
    home: Path, *args: str, endpoint: str, offline: bool = False, **env: str
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ADEPT_", "HF_"))}
    base.update(
        HF_HOME=str(home / "hf"), HF_ENDPOINT=endpoint, ADEPT_DATA_DIR=str(home / "data"), COLUMNS="250"
    )
    base.pop("TRANSFORMERS_OFFLINE", None)
    if offline:
        base["HF_HUB_OFFLINE"] = "1"
    base.update(env)
    cmd = [sys.executable, "-c", "from tools.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=base, timeout=300)


def one_line(proc: subprocess.CompletedProcess, exit_code: int) -> str:
    assert proc.returncode == exit_code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_download_fills_the_cache_once_and_serving_resolves_it_offline(hub, tmp_path, tiny_phi3):
    pulled = run(tmp_path, "models", "pull", "--download", "acme/tiny-phi3", endpoint=hub.url)
    assert pulled.returncode == 0, pulled.stderr
    assert "ready: acme/tiny-phi3 ->" in pulled.stdout
    # Progress reaches a log as whole lines (a pod's log has no terminal).
    assert any("100%" in line for line in pulled.stderr.splitlines()), pulled.stderr
    snapshot = Path(pulled.stdout.split("->", 1)[1].strip())
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (snapshot / name).read_bytes() == (tiny_phi3 / name).read_bytes()
    downloads = len(hub.fetched())
    assert downloads >= 3

    # Idempotent: a second run fetches no file again.
    again = run(tmp_path, "models", "pull", "--download", "acme/tiny-phi3", endpoint=hub.url)
    assert again.returncode == 0, again.stderr
    assert len(hub.fetched()) == downloads

    # What the replicas and the init containers see: offline, the model resolves to the same snapshot.
    offline = run(tmp_path, "models", "pull", "acme/tiny-phi3", endpoint=hub.url, offline=True)
    assert f"-> {snapshot}" in offline.stdout, offline.stderr
    waited = run(
        tmp_path, "models", "wait", "acme/tiny-phi3", "--timeout", "5", endpoint=hub.url, offline=True
    )
    assert waited.returncode == 0 and "ready: acme/tiny-phi3" in waited.stdout, waited.stderr


def test_a_pinned_revision_is_fetched_and_resolved_by_its_commit(hub, tmp_path):
    commit = hub.repos["acme/tiny-phi3"].commit
    ref = f"acme/tiny-phi3@{commit}"
    pulled = run(tmp_path, "models", "pull", "--download", ref, endpoint=hub.url)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.rstrip().endswith(commit)
    offline = run(tmp_path, "models", "wait", ref, "--timeout", "5", endpoint=hub.url, offline=True)
    assert offline.returncode == 0, offline.stderr
    # The default branch was never fetched, so the unpinned id is still missing offline.
    unpinned = run(tmp_path, "models", "pull", "acme/tiny-phi3", endpoint=hub.url, offline=True)
    assert "not in the local Hugging Face cache" in one_line(unpinned, 4)


def test_a_gated_model_needs_the_token(hub, tmp_path):
    refused = run(tmp_path, "models", "pull", "--download", "acme/gated-phi3", endpoint=hub.url)
    assert "gated" in one_line(refused, 4) and "HF_TOKEN" in refused.stderr
    allowed = run(
        tmp_path, "models", "pull", "--download", "acme/gated-phi3", endpoint=hub.url, HF_TOKEN=TOKEN
    )
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize(
    ("ref", "exit_code", "words"),
    [
        ("acme/absent", 4, "'acme/absent' not found on"),
        ("acme/tiny-phi3@no-such-branch", 4, "revision 'no-such-branch' of 'acme/tiny-phi3' not found"),
        ("acme/tiny-phi3@", 2, "expected ORG/NAME or ORG/NAME@REVISION"),
    ],
)
def test_bad_references_fail_in_one_line(hub, tmp_path, ref, exit_code, words):
    assert words in one_line(run(tmp_path, "models", "pull", "--download", ref, endpoint=hub.url), exit_code)


def test_an_unreachable_hub_and_offline_mode_are_clear_errors(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    unreachable = run(tmp_path, "models", "pull", "--download", "acme/tiny-phi3", endpoint=closed)
    assert "cannot reach" in one_line(unreachable, 7)
    offline = run(tmp_path, "models", "pull", "--download", "acme/tiny-phi3", endpoint=closed, offline=True)
    assert "HF_HUB_OFFLINE=1 forbids downloads" in one_line(offline, 2)


def test_wait_reports_what_is_missing_and_gives_up_after_the_timeout(hub, tmp_path):
    waited = run(
        tmp_path,
        "models",
        "wait",
        "acme/tiny-phi3",
        "bundled:all-minilm-l6-v2",
        "--timeout",
        "1",
        "--interval",
        "0.2",
        "--hint",
        "the weights Job fills it",
        endpoint=hub.url,
        offline=True,
    )
    assert "still missing after" in one_line(waited, 7)
    progress = [line for line in waited.stdout.splitlines() if line.startswith("waiting")]
    assert len(progress) >= 2 and all("acme/tiny-phi3" in line for line in progress)
    assert all(line.endswith("the weights Job fills it") for line in progress)
    assert not any("all-minilm" in line for line in progress)  # bundled models ship in the image
    unknown = run(tmp_path, "models", "wait", "bundled:nope", endpoint=hub.url, offline=True)
    assert "unknown bundled model" in one_line(unknown, 4)


def test_an_interrupted_download_counts_as_missing(hub, tmp_path):
    pulled = run(tmp_path, "models", "pull", "--download", "acme/tiny-phi3", endpoint=hub.url)
    snapshot = Path(pulled.stdout.split("->", 1)[1].strip())
    (snapshot / "model.safetensors").unlink()  # as if the Job died before this file arrived
    waited = run(
        tmp_path,
        "models",
        "wait",
        "acme/tiny-phi3",
        "--timeout",
        "0.5",
        "--interval",
        "0.2",
        endpoint=hub.url,
        offline=True,
    )
    assert "only partly in the local Hugging Face cache" in one_line(waited, 7)
    # Running the download again completes it.
    again = run(tmp_path, "models", "pull", "--download", "acme/tiny-phi3", endpoint=hub.url)
    assert again.returncode == 0 and (snapshot / "model.safetensors").is_file(), again.stderr
