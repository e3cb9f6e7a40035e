"""The real operator against kmock's Kubernetes emulator, a local Ray head and a cluster-mode gateway."""

from __future__ import annotations

import json

import httpx
import pytest

from adept.tenancy import kubernetes as K
from operators import resources as R

pytestmark = pytest.mark.integration


def tenant(name: str, **spec):
    return {"apiVersion": "adept.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec}


def failed_message(obj) -> str:
    cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Failed")
    assert cond["status"] == "True", obj["status"]
    return cond["message"]


def api_key(cluster, name: str) -> str:
    return K.decode_secret_value(cluster.kube.get_secret("adept-test", K.key_secret_name(name)), "api-key")


def models_status(gateway, key: str) -> int:
    return httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def test_tenant_gets_a_key_that_authenticates_and_rotates(cluster, operator):
    from adept.errors import AuthenticationError
    from adept.tenancy.kubernetes import KubernetesTenantStore

    cluster.apply(tenant("acme", displayName="Acme", quotas={"max_documents": 50}))
    obj = cluster.wait_condition("Tenant", "acme")
    assert obj["status"]["secretName"] == K.key_secret_name("acme")
    assert obj["status"]["observedGeneration"] == 1
    key = api_key(cluster, "acme")
    assert obj["status"]["keyPrefix"] == key[: len("adept-") + 4]
    store = KubernetesTenantStore("adept-test", kube=cluster.kube)
    try:
        cluster.wait("the watch sees the key", lambda: _authenticates(store, key))
        assert store.get("acme").quotas.max_documents == 50

        cluster.update_spec("Tenant", "acme", {"keyRotation": 1})
        cluster.wait("rotation", lambda: cluster.get("Tenant", "acme")["status"].get("keyRotation") == 1)
        new = api_key(cluster, "acme")
        assert new != key
        cluster.wait("the new key works", lambda: _authenticates(store, new))
        with pytest.raises(AuthenticationError):
            store.authenticate(key)
    finally:
        store.close()
    operator.restart()  # the key is never in the operator's output
    assert key not in operator.outputs[-1] and new not in operator.outputs[-1]


def _authenticates(store, key: str) -> bool:
    from adept.errors import AuthenticationError

    try:
        return store.authenticate(key).name is not None
    except AuthenticationError:
        return False


def test_a_tenant_resource_authenticates_at_the_gateway_and_stops_when_deleted(
    cluster, operator, gateway, monkeypatch
):
    """Cluster mode: kubectl creates the tenant, the gateway's watch learns its key, no API call per request.

    Waits are for conditions (the key works, the key stops working), bounded generously: they used to be 15 s
    and a wall-clock assertion, and counted every GET the emulator served, the operator's included: on a busy
    machine the operator's own handling of the new Tenant (its key-moved event reads the Tenant and its Secret)
    can land after the Ready condition, inside the window. Now only the gateway's reads are counted.
    """
    cluster.apply(tenant("kubectl-co"))
    cluster.wait_condition("Tenant", "kubectl-co")
    key = api_key(cluster, "kubectl-co")
    cluster.wait("gateway accepts the key", lambda: models_status(gateway, key) == 200)

    reads = _count_gateway_reads(gateway, monkeypatch)
    assert all(models_status(gateway, key) == 200 for _ in range(20))
    assert models_status(gateway, "adept-not-a-real-key-" + "x" * 30) == 401
    assert reads == [], reads  # authentication came from the watched mirror, not an API call per request

    cluster.delete("Tenant", "kubectl-co")
    cluster.wait("the key stops working", lambda: models_status(gateway, key) == 401)
    cluster.wait_gone("Tenant", "kubectl-co")


def _count_gateway_reads(gateway, monkeypatch) -> list[str]:
    """Record the point reads (GET/LIST, not the mirror's watch) the gateway's tenant store makes from now on."""
    kube = gateway.ctx.platform.tenants.kube
    seen: list[str] = []
    for name in ("get", "get_secret", "list", "list_secrets"):
        real = getattr(kube, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append(f"{_name}{args}")
            return _real(*args, **kwargs)

        monkeypatch.setattr(kube, name, spy)
    return seen


def test_tenants_made_through_the_admin_api_need_no_secret(cluster, operator, gateway):
    """Cluster mode: the gateway records a key's hash on the Tenant (it can read no Secret); the key is shown once.

    Rotating an operator-issued key through the admin API leaves its Secret holding a dead key:
    the operator drops that Secret.
    """
    from adept.tenancy import hash_api_key
    from tests.integration.operators.conftest import ADMIN_KEY

    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        r = admin.post("/admin/tenants", json={"name": "api-co"})
        assert r.status_code == 201, r.text
        key = r.json()["api_key"]
        assert models_status(gateway, key) == 200
        obj = cluster.wait_condition("Tenant", "api-co")
        assert obj["metadata"]["annotations"][K.HASH_ANNOTATION] == hash_api_key(key)
        assert obj["status"].get("secretName") is None
        assert cluster.kube.get_secret("adept-test", K.key_secret_name("api-co")) is None

        cluster.apply(tenant("both"))
        cluster.wait_condition("Tenant", "both")
        old = api_key(cluster, "both")
        cluster.wait("operator's key works", lambda: models_status(gateway, old) == 200, timeout=15)
        new = admin.post("/admin/tenants/both/rotate-key").json()["api_key"]
    assert models_status(gateway, new) == 200 and models_status(gateway, old) == 401
    secret = K.key_secret_name("both")
    cluster.wait("the dead key's Secret goes", lambda: cluster.kube.get_secret("adept-test", secret) is None)


def test_bad_quota_is_a_failed_condition_not_a_retry_loop(cluster, operator):
    cluster.apply(tenant("broke", quotas={"requests_per_minute": -5}))
    obj = cluster.wait_condition("Tenant", "broke", "Failed")
    assert "quotas.requests_per_minute" in failed_message(obj) and "-5" in failed_message(obj)
    assert cluster.kube.get_secret("adept-test", K.key_secret_name("broke")) is None


def kb(name: str, tenant: str, sources, **spec):
    return {
        "apiVersion": "adept.dev/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": name},
        "spec": {"tenant": tenant, "sources": sources, **spec},
    }


def test_knowledge_base_ingests_reports_and_resyncs(cluster, operator, env):
    docs = env["shared"] / "acme-docs"
    docs.mkdir()
    (docs / "outages.md").write_text(
        "# Outages\n\nCrews are dispatched within 45 minutes of a reported outage.\n"
    )
    (docs / "tariffs.txt").write_text(
        "The night tariff applies from 23:00 to 07:00 for residential meters.\n"
    )
    (docs / "scan.bin").write_bytes(b"\x00\x01binary")
    cluster.apply(tenant("kbt"))
    inline = {"documents": [{"id": "hotline", "title": "Hotline", "text": "Call 0800-LUMEN-24 for outages."}]}
    cluster.apply(kb("manuals", "kbt", [{"path": "acme-docs"}, inline]))
    obj = cluster.wait_condition("KnowledgeBase", "manuals")
    st = obj["status"]
    assert (st["documents"], st["observedGeneration"]) == (3, 1) and st["chunks"] >= 3 and st["lastSync"]
    assert [e["source"] for e in st["errors"]] == ["scan.bin"] and "unsupported" in st["errors"][0]["reason"]

    cluster.update_spec(
        "KnowledgeBase", "manuals", {"sources": [{"path": "acme-docs"}]}
    )  # drop the inline one
    cluster.wait(
        "resync after spec change",
        lambda: cluster.get("KnowledgeBase", "manuals")["status"].get("documents") == 2,
    )

    (docs / "safety.md").write_text("# Safety\n\nAlways ground a line before touching it.\n")
    cluster.update_spec("KnowledgeBase", "manuals", {"resyncPeriod": 1})  # the period picks up new files
    cluster.wait(
        "periodic resync", lambda: cluster.get("KnowledgeBase", "manuals")["status"].get("documents") == 3
    )
    cluster.delete("KnowledgeBase", "manuals")
    cluster.wait_gone("KnowledgeBase", "manuals")


def test_knowledge_base_waits_for_its_tenant_and_refuses_escapes(cluster, operator):
    cluster.apply(kb("orphan", "nobody", [{"documents": [{"text": "x"}]}]))
    obj = cluster.wait_condition("KnowledgeBase", "orphan", "Progressing")
    assert "Tenant 'nobody' does not exist" in obj["status"]["conditions"][1]["message"]
    cluster.apply(tenant("esc"))
    cluster.apply(kb("escape", "esc", [{"path": "/../../etc"}]))
    obj = cluster.wait_condition("KnowledgeBase", "escape", "Failed")
    assert "no '..'" in failed_message(obj)
    cluster.delete("KnowledgeBase", "orphan")
    cluster.wait_gone("KnowledgeBase", "orphan")


def ftj(name: str, tenant_name: str, adapter: str, /, **config):
    config = {"data": {"path": "/data/train.jsonl"}, **config}
    return {
        "apiVersion": "adept.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {"tenant": tenant_name, "adapter": adapter, "config": config},
    }


def ray_jobs_of(ray_head, name: str) -> list:
    jobs = ray_head.client().list_jobs()
    return [j for j in jobs if (j.metadata or {}).get("adept.dev/job") == name]


def test_finetune_job_survives_an_operator_restart_and_yields_an_adapter(cluster, operator, env, ray_head):
    cluster.apply(tenant("ft"))
    cluster.wait_condition("Tenant", "ft")
    cluster.apply(ftj("tech-run", "ft", "tech", description="gated"))  # held at a gate until we reopen it
    cluster.wait(
        "job running",
        lambda: (cluster.get("FineTuneJob", "tech-run").get("status") or {}).get("step") == 1,
        90,
    )
    operator.restart()
    env["gate"].touch()
    obj = cluster.wait_condition("FineTuneJob", "tech-run", timeout=90)
    assert obj["status"]["state"] == "SUCCEEDED" and obj["status"]["adapterVersion"] == "v1"
    assert (obj["status"]["step"], obj["status"]["loss"]) == (4, 1.25)
    assert len(ray_jobs_of(ray_head, "tech-run")) == 1  # the restart did not submit again
    adapter = cluster.wait_condition("Adapter", R.adapter_object_name("ft", "tech"))
    assert adapter["status"]["activeVersion"] == "v1" and adapter["status"]["versions"] == ["v1"]
    from adept.adapters import AdapterRegistry

    assert AdapterRegistry(str(env["data"] / "adapters")).resolve("ft", "tech").version == "v1"
    # The job published nothing itself: it held no credentials to (the operator published its result).
    names = set(json.loads(env["gate"].with_name("job-env-names.json").read_text()))
    secrets = {"KUBECONFIG", "ADEPT_GATEWAY_ADMIN_KEY", "ADEPT_ADMIN_KEY", "ADEPT_RAY_TOKEN"}
    assert not names & (secrets | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


def test_crash_between_submit_and_status_adopts_the_running_job(cluster, operator, env, ray_head, tmp_path):
    """The operator died after submit_job and before the record said so: the same id is refused, we adopt."""
    import os

    import yaml

    from operators.models import FineTuneJobSpec

    body = ftj("adopt-run", "ft", "adopted")
    job = FineTuneJobSpec.model_validate(body["spec"]).job_config()
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(job.model_dump(mode="json", exclude_none=True)))
    ray_head.client().submit_job(
        entrypoint=os.environ["ADEPT_JOB_ENTRYPOINT"],
        submission_id="adopt-run-a1",  # what the executor submits for the job's first attempt
        runtime_env={"working_dir": str(tmp_path), "env_vars": json.loads(os.environ["ADEPT_JOB_ENV"])},
        metadata={"adept.dev/job": "adopt-run", "adept.dev/tenant": "ft"},
    )
    cluster.apply(body)
    obj = cluster.wait_condition("FineTuneJob", "adopt-run", timeout=90)
    assert obj["status"]["jobId"] == "adopt-run-a1" and obj["status"]["state"] == "SUCCEEDED"
    assert len(ray_jobs_of(ray_head, "adopt-run")) == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"base_model": "acme/unknown-7b"}, "trained on base model 'acme/unknown-7b'"),
        ({"tenant": "other"}, "config.tenant: 'other' differs from spec.tenant 'ft'"),
        ({"train": {"epochs": 0}}, "train.epochs"),
    ],
)
def test_invalid_finetune_jobs_fail_with_a_readable_condition(cluster, operator, ray_head, config, message):
    name = "bad-" + next(iter(config)).replace("_", "-")
    cluster.apply(ftj(name, "ft", "x", **config))
    obj = cluster.wait_condition("FineTuneJob", name, "Failed")
    assert message in failed_message(obj)
    assert ray_jobs_of(ray_head, name) == []


def test_deleting_a_tenant_leaves_nothing_behind(cluster, operator, env, gateway, tiny_phi3):
    import numpy as np
    from safetensors.numpy import save_file

    src = env["shared"] / "gone-adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "base_model_name_or_path": str(tiny_phi3)})
    )
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(src / "adapter_model.safetensors"))
    cluster.apply(tenant("gone"))
    cluster.apply(
        kb("gone-kb", "gone", [{"documents": [{"id": "a", "text": "Gone tenant's only document."}]}])
    )
    cluster.apply(
        {
            "apiVersion": "adept.dev/v1alpha1",
            "kind": "Adapter",
            "metadata": {"name": "gone-style"},
            "spec": {"tenant": "gone", "name": "style", "source": "gone-adapter"},
        }
    )
    assert cluster.wait_condition("KnowledgeBase", "gone-kb")["status"]["documents"] == 1
    assert cluster.wait_condition("Adapter", "gone-style")["status"]["activeVersion"] == "v1"
    assert (env["data"] / "adapters" / "gone" / "style").is_dir()

    cluster.delete("Tenant", "gone")
    for kind, name in (("Tenant", "gone"), ("KnowledgeBase", "gone-kb"), ("Adapter", "gone-style")):
        cluster.wait_gone(kind, name)
    assert cluster.kube.get_secret("adept-test", K.key_secret_name("gone")) is None
    assert not (env["data"] / "adapters" / "gone").exists()
    # The knowledge base the gateway holds: the tenant's documents went with it.
    assert gateway.kb.list_documents("gone") == []
    assert [d.id for d in gateway.kb.list_documents("kbt")] == []  # the deleted KnowledgeBase took its own


def test_a_job_created_through_the_api_is_a_finetunejob_the_operator_drives(
    cluster, operator, gateway, ray_head
):
    """Cluster mode: the OpenAI client creates a job; kubectl sees a FineTuneJob; the operator runs and cancels it."""
    import openai

    cluster.apply(tenant("apift"))
    cluster.wait_condition("Tenant", "apift")
    key = api_key(cluster, "apift")
    cluster.wait("gateway accepts the key", lambda: models_status(gateway, key) == 200, timeout=15)
    c = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    f = c.files.create(file=("t.jsonl", (json.dumps(line) + "\n").encode()), purpose="fine-tune")
    base = c.models.list().data[0].id
    job = c.fine_tuning.jobs.create(model=base, training_file=f.id, suffix="k8s")

    obj = cluster.get("FineTuneJob", job.id)  # kubectl get ftj <id>: the same job
    assert obj["spec"]["tenant"] == "apift" and obj["spec"]["adapter"].startswith("ft-k8s-")
    assert obj["spec"]["config"]["data"]["path"].endswith(f"apift/{f.id}.jsonl")
    done = cluster.wait_condition("FineTuneJob", job.id, timeout=90)
    assert done["status"]["state"] == "SUCCEEDED" and [h["step"] for h in done["status"]["history"]] == [1, 4]
    finished = c.fine_tuning.jobs.retrieve(job.id)
    assert (
        finished.status == "succeeded" and finished.fine_tuned_model == f"ft:{base}:apift:k8s:{job.id[6:14]}"
    )
    steps = [e.data["step"] for e in c.fine_tuning.jobs.list_events(job.id).data if e.type == "metrics"]
    assert steps == [4, 1]
    assert obj["spec"]["adapter"] in [m.id for m in c.models.list().data]
    cluster.wait_condition("Adapter", R.adapter_object_name("apift", obj["spec"]["adapter"]))

    # A job the fake trainer holds until its Ray job is stopped: cancel it through the API.
    hold = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "HOLD-UNTIL-STOPPED"}]
    }
    held = c.files.create(file=("hold.jsonl", (json.dumps(hold) + "\n").encode()), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model=base, training_file=held.id)
    cluster.wait(
        "the held job to report a step",
        lambda: [e for e in c.fine_tuning.jobs.list_events(job.id).data if e.type == "metrics"],
        90,
    )
    assert c.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert cluster.get("FineTuneJob", job.id)["spec"]["cancel"] is True
    stopped = cluster.wait(
        "the operator to stop it",
        lambda: (o := cluster.get("FineTuneJob", job.id))["status"].get("state") == "STOPPED" and o,
        60,
    )
    ray_jobs = ray_head.client()
    cluster.wait(
        "Ray to stop the job",
        lambda: str(ray_jobs.get_job_status(stopped["status"]["jobId"]).value) == "STOPPED",
        60,
    )
    assert c.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    cluster.apply(tenant("apift-other"))
    cluster.wait_condition("Tenant", "apift-other")
    other_key = api_key(cluster, "apift-other")
    cluster.wait(
        "gateway accepts the other key", lambda: models_status(gateway, other_key) == 200, timeout=15
    )
    other = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=other_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    assert other.fine_tuning.jobs.list().data == []
