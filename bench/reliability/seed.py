"""Tenants with their own adapters and knowledge bases, created through the admin and tenant APIs.

Every tenant gets secret markers (``canary``) in its documents and random-suffixed adapter and
document names, so any of them showing up in another tenant's response is an unambiguous leak.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def make_lora(base: Path, dest: Path, *, seed: int) -> Path:
    """A real PEFT LoRA adapter on ``base`` with random non-zero weights (so it changes the output)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (dest / "adapter_model.safetensors").is_file():
        return dest
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["qkv_proj", "o_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(dest)
    return dest


@dataclass
class SeededTenant:
    """One tenant and the things it owns (names carry random suffixes; canaries are secret words)."""

    name: str
    key: str
    adapters: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    canaries: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def markers(self) -> list[str]:
        """Strings only this tenant's data contains: another tenant must never receive them."""
        return [
            *self.canaries,
            *self.documents,
            *self.files,
            *self.jobs,
            *(f"{self.name}/{a}" for a in self.adapters),
        ]


def documents_for(tenant: str, canary: str, n: int) -> list[dict[str, Any]]:
    """``n`` JSON records about a fictional substation, each holding the tenant's canary word."""
    suffix = secrets.token_hex(3)
    return [
        {
            "id": f"{tenant}-doc{i}-{suffix}",
            "title": f"Substation procedure {i}",
            "text": (
                f"Procedure {i} for the substation breaker panel. The isolation code is {canary}. "
                f"Always ground the feeder before work; torque the clamp to {40 + i} newton metres. "
                "Inspect the relay, log the reading, and report faults to dispatch within one hour."
            ),
            "metadata": {"section": f"s{i}"},
        }
        for i in range(n)
    ]


def seed_finetuning(c: httpx.Client, t: SeededTenant, canary: str) -> None:
    """One training file (holding the canary) and one fine-tuning job on it."""
    line = {
        "messages": [{"role": "user", "content": "Isolation code?"}, {"role": "assistant", "content": canary}]
    }
    upload = c.post(
        "/v1/files",
        files={"file": ("train.jsonl", (json.dumps(line) + "\n").encode())},
        data={"purpose": "fine-tune"},
        headers=t.headers(),
    )
    upload.raise_for_status()
    t.files.append(upload.json()["id"])
    base = c.get("/v1/models", headers=t.headers()).json()["data"][0]["id"]
    job = c.post(
        "/v1/fine_tuning/jobs", json={"model": base, "training_file": t.files[0]}, headers=t.headers()
    )
    job.raise_for_status()
    t.jobs.append(job.json()["id"])


def seed_tenants(
    url: str,
    admin_key: str,
    adapter_src: Path,
    *,
    n: int,
    prefix: str = "t",
    docs_per_tenant: int = 3,
    finetuning: bool = True,
) -> list[SeededTenant]:
    """Create ``n`` tenants, each with one adapter (published from ``adapter_src``) and a few documents.

    With ``finetuning`` each also gets a training file and a job on it: only where no job runner
    trains them (the in-process platform), or a load measurement would share the CPUs with training.
    """
    out = []
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=url, timeout=120) as c:
        for i in range(n):
            name = f"{prefix}{i}-{secrets.token_hex(2)}"
            # Unlimited quotas: these tenants measure faults and load, not rate limiting.
            quotas = {"requests_per_minute": 0, "max_adapters": 0}
            r = c.post("/admin/tenants", json={"name": name, "quotas": quotas}, headers=admin)
            r.raise_for_status()
            t = SeededTenant(name, r.json()["api_key"])
            adapter = f"ad{i}-{secrets.token_hex(3)}"
            r = c.post(
                "/admin/adapters",
                json={"tenant": name, "name": adapter, "path": str(adapter_src)},
                headers=admin,
            )
            r.raise_for_status()
            t.adapters.append(adapter)
            canary = f"zq{secrets.token_hex(5)}"
            t.canaries.append(canary)
            records = documents_for(name, canary, docs_per_tenant)
            r = c.post("/v1/kb/documents", json={"records": records}, headers=t.headers())
            r.raise_for_status()
            t.documents = [d["id"] for d in r.json()["documents"]]
            if finetuning:
                seed_finetuning(c, t, canary)
            out.append(t)
    return out
