"""After training: the adapter, its manifest, a loss curve and metrics, into the adapter registry.

Exactly one version is published per run, even when the job is retried or re-submitted: the
manifest records the run id, and a run whose id is already in the registry is not published again.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from adept.errors import InvalidRequest

RUN_ID_KEY = "run_id"


def final_summary(state: dict[str, Any]) -> dict[str, Any]:
    """Last train loss, last eval loss/perplexity, steps, tokens and duration from a trainer state."""
    history = state.get("history", [])
    last_eval = next((h for h in reversed(history) if "eval_loss" in h), {})
    out = {
        "steps": state.get("step", 0),
        "tokens_seen": state.get("tokens_seen", 0),
        "label_tokens": state.get("label_tokens", 0),
        "train_seconds": round(state.get("train_seconds", 0.0), 2),
        "restarts": len(state.get("restarts", [])),
        "peak_memory_mb": round(state.get("peak_memory_mb", 0.0), 1),
        "train_loss": history[-1]["train_loss"] if history else None,
    }
    if last_eval:
        out.update(eval_loss=last_eval["eval_loss"], eval_perplexity=last_eval.get("eval_perplexity"))
    return out


def write_loss_curve(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train (and eval) loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([h["step"] for h in history], [h["train_loss"] for h in history], label="train loss")
    evals = [h for h in history if "eval_loss" in h]
    if evals:
        ax.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="eval loss")
    ax.set(xlabel="step", ylabel="loss (assistant tokens)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def already_published(registry: Any, tenant: str, name: str, run_id: str) -> Any | None:
    """The version this run already published, if any."""
    for version in registry.list(tenant):
        if version.name == name and version.manifest.metrics.get(RUN_ID_KEY) == run_id:
            return version
    return None


def publish_adapter(
    platform: Any,
    cfg: Any,
    checkpoint_dir: Path,
    *,
    run_id: str,
    base_model_id: str,
    dataset_hash: str,
    duration_s: float,
) -> Any:
    """Publish the adapter in a final checkpoint (once per ``run_id``) with manifest, PNG and metrics.

    Publishing goes through the kernel's ``Platform`` (``platform``), which enforces the tenant's
    ``max_adapters`` quota and the base-model policy against the model the platform *serves*
    (not the base this job says it used).

    Returns:
        The published (or previously published) ``AdapterVersion``.
    """
    from training.recipes.lora_finetune import ADAPTER_DIR, STATE_FILE

    previous = already_published(platform.registry, cfg.tenant, cfg.adapter, run_id)
    if previous is not None:
        return previous
    adapter_dir = Path(checkpoint_dir) / ADAPTER_DIR
    if not (adapter_dir / "adapter_config.json").is_file():
        raise InvalidRequest(f"final checkpoint {checkpoint_dir} holds no adapter")
    state = json.loads((Path(checkpoint_dir) / STATE_FILE).read_text())
    summary = final_summary(state)
    staging = Path(checkpoint_dir).parent / f".publish-{run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(adapter_dir, staging)
    try:
        extras = {"metrics.json": staging / "metrics.json", "loss_curve.png": staging / "loss_curve.png"}
        extras["metrics.json"].write_text(
            json.dumps({"summary": summary, "history": state.get("history", [])}, indent=2)
        )
        write_loss_curve(state.get("history", []), extras["loss_curve.png"], f"{cfg.tenant}/{cfg.adapter}")
        manifest = {
            "tenant": cfg.tenant,
            "name": cfg.adapter,
            "base_model": base_model_id,
            "method": cfg.method,
            "rank": cfg.lora.rank,
            "alpha": cfg.lora.alpha,
            "target_modules": _target_modules(adapter_dir),
            "dataset_hash": dataset_hash,
            "steps": summary["steps"],
            "tokens_seen": summary["tokens_seen"],
            "duration_s": round(duration_s, 2),
            "metrics": {
                **{k: v for k, v in summary.items() if k not in ("steps", "tokens_seen")},
                RUN_ID_KEY: run_id,
            },
            "description": cfg.description,
        }
        return asyncio.run(
            platform.publish_adapter(cfg.tenant, cfg.adapter, staging, manifest, extra_files=extras)
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _target_modules(adapter_dir: Path) -> list[str]:
    targets = json.loads((adapter_dir / "adapter_config.json").read_text()).get("target_modules") or []
    return sorted(targets) if isinstance(targets, list) else [str(targets)]
