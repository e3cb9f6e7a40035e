"""``adept finetune list | show | events | cancel``: the tenant's jobs through a running platform's API.

The gateway's real app (real stores: SQLite tenants and jobs, files, the registry) served over HTTP on
loopback, as ``adept up`` serves it; the CLI finds it by ``--url`` and acts as the tenant its key names.
"""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest
from typer.testing import CliRunner

from adept.finetuning.jobs import advance
from tests.unit.console.conftest import platform  # noqa: F401  (the gateway's app with real stores)
from tests.unit.gateway.test_finetuning_api import CHAT, ft, jsonl  # noqa: F401
from tools.cli import app

runner = CliRunner()


@pytest.fixture
def served(ft, monkeypatch):  # noqa: F811
    import uvicorn

    for var in ("ADEPT_URL", "ADEPT_API_KEY", "ADEPT_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    server = uvicorn.Server(uvicorn.Config(ft["app"], host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30  # a bound for a server that never starts, not a speed assumption
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield {**ft, "url": f"http://127.0.0.1:{port}"}
    finally:
        server.should_exit = True
        thread.join(10)


def cli(served, key: str, *args: str):
    return runner.invoke(app, ["finetune", *args, "--url", served["url"], "--api-key", key])


def make_job(served, tenant: str) -> str:
    c = openai.OpenAI(base_url=f"{served['url']}/v1", api_key=served[tenant], max_retries=0)
    f = c.files.create(file=("train.jsonl", jsonl(CHAT)), purpose="fine-tune")
    return c.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id, suffix=tenant).id


def test_list_show_events_cancel_as_the_tenant_the_key_names(served) -> None:
    mine, theirs = make_job(served, "acme"), make_job(served, "globex")
    listed = cli(served, served["acme"], "list")
    assert listed.exit_code == 0, listed.output
    assert mine in listed.output and theirs not in listed.output and "validating_files" in listed.output
    as_json = json.loads(cli(served, served["acme"], "list", "--json").output)
    assert [j["id"] for j in as_json["data"]] == [mine]

    shown = cli(served, served["acme"], "show", mine)
    assert shown.exit_code == 0 and mine in shown.output and "bundled:test-base" in shown.output
    events = cli(served, served["acme"], "events", mine)
    assert events.exit_code == 0 and f"Created fine-tuning job: {mine}" in events.output

    cancelled = cli(served, served["acme"], "cancel", mine)
    assert cancelled.exit_code == 0 and f"{mine} cancelled" in cancelled.output
    assert served["jobs"].get("acme", mine).status == "cancelled"
    assert cli(served, served["acme"], "cancel", mine).exit_code == 0  # again: still cancelled (idempotent)
    # Cancelling a finished job: one line, non-zero, nothing changed.
    done = make_job(served, "acme")
    served["jobs"].modify(done, lambda r: advance(advance(advance(r, "queued"), "running"), "succeeded"))
    refused = cli(served, served["acme"], "cancel", done)
    assert refused.exit_code != 0 and refused.output.count("\n") == 1, refused.output
    assert "has already succeeded" in refused.output
    assert served["jobs"].get("acme", done).status == "succeeded"


def test_another_tenants_job_is_not_found_and_bad_input_is_one_line(served) -> None:
    theirs = make_job(served, "globex")
    for command in ("show", "events", "cancel"):
        r = cli(served, served["acme"], command, theirs)
        assert r.exit_code == 4 and r.output.count("\n") == 1, (command, r.output)
        assert f"Could not find fine-tuning job '{theirs}'" in r.output
    assert served["jobs"].get("globex", theirs).status == "validating_files"  # untouched
    assert cli(served, served["acme"], "list").output.strip() == "no fine-tuning jobs"

    bad = cli(served, served["acme"], "show", "../../admin/tenants")
    assert bad.exit_code == 4 and bad.output.count("\n") == 1
    limit = cli(served, served["acme"], "list", "--limit", "0")
    assert limit.exit_code != 0 and limit.output.strip() == "error: --limit must be between 1 and 100, not 0"
    wrong_key = cli(served, "adept-not-a-key", "list")
    assert wrong_key.exit_code == 3 and wrong_key.output.count("\n") == 1


def test_with_no_platform_running_the_data_dirs_jobs_are_read_here(tmp_path, monkeypatch) -> None:
    """Nothing runs on the data dir: the same owner over its stores answers, as the key's tenant only."""
    import asyncio

    from adept.config.finetuning import FineTuningConfig
    from adept.config.platform import PlatformConfig
    from adept.config.tenant import TenantSpec
    from adept.finetuning.service import JobRequest, open_fine_tuning
    from adept.platform import Platform

    for var in ("ADEPT_URL", "ADEPT_API_KEY", "ADEPT_DATA_DIR", "ADEPT_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    kernel = Platform(PlatformConfig(data_dir=tmp_path, model="bundled:test-base"))
    _, acme = asyncio.run(kernel.create_tenant(TenantSpec(name="acme")))
    _, globex = asyncio.run(kernel.create_tenant(TenantSpec(name="globex")))
    owner = open_fine_tuning(kernel, FineTuningConfig())
    f = owner.files.create("acme", "t.jsonl", "fine-tune", jsonl(CHAT))
    job = asyncio.run(owner.create("acme", JobRequest(model="bundled:test-base", training_file=f.id)))
    kernel.close()

    def local(key: str, *args: str):
        return runner.invoke(app, ["finetune", *args, "--data-dir", str(tmp_path), "--api-key", key])

    listed = local(acme, "list")
    assert listed.exit_code == 0 and job.id in listed.output, listed.output
    assert local(globex, "list").output.strip() == "no fine-tuning jobs"
    theirs = local(globex, "show", job.id)
    assert theirs.exit_code == 4 and f"Could not find fine-tuning job '{job.id}'" in theirs.output
    assert local(acme, "cancel", job.id).exit_code == 0
    assert "The job was cancelled" in local(acme, "events", job.id).output
    assert local("adept-wrong", "list").exit_code == 3
