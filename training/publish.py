"""After training: the run's result — adapter, manifest, loss curve, metrics — for the publisher.

``stage_result`` writes it into ``<run dir>/result`` (``adept.training_runs``), where
``Platform.publish_run`` publishes it: this job itself on one machine, the operator on a cluster.
Exactly one version is published per run, even when the job is retried or re-submitted: the
manifest records the run id, and a run whose id is already in the registry is not published again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from adept.errors import InvalidRequest
from adept.training_runs import RESULT_DIR, RUN_ID_KEY


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


def stage_result(
    cfg: Any,
    checkpoint_dir: Path,
    run_dir: str,
    *,
    run_id: str,
    base_model_id: str,
    dataset_hash: str,
    duration_s: float,
) -> str:
    """Write the adapter of a final checkpoint, its manifest, metrics and loss curve to ``<run_dir>/result``.

    The directory is assembled beside and renamed into place, so a publisher never reads half of
    it (the run state, written after, says it is complete). Returns its URI.
    """
    from training.recipes.lora_finetune import ADAPTER_DIR, STATE_FILE

    adapter_dir = Path(checkpoint_dir) / ADAPTER_DIR
    if not (adapter_dir / "adapter_config.json").is_file():
        raise InvalidRequest(f"final checkpoint {checkpoint_dir} holds no adapter")
    state = json.loads((Path(checkpoint_dir) / STATE_FILE).read_text())
    summary = final_summary(state)
    with tempfile.TemporaryDirectory(prefix="adept-result-") as tmp:
        staging = Path(tmp) / RESULT_DIR
        shutil.copytree(adapter_dir, staging)
        (staging / "metrics.json").write_text(
            json.dumps({"summary": summary, "history": state.get("history", [])}, indent=2)
        )
        write_loss_curve(state.get("history", []), staging / "loss_curve.png", f"{cfg.tenant}/{cfg.adapter}")
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
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return _upload(staging, run_dir)


def _upload(staging: Path, run_dir: str) -> str:
    """Copy ``staging`` to ``<run_dir>/result`` (any pyarrow filesystem): a fresh name, then a rename."""
    import pyarrow.fs

    uri = run_dir if "://" in run_dir else str(Path(run_dir).expanduser().absolute())
    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    partial, final = f"{root}/.{RESULT_DIR}-{uuid.uuid4().hex}", f"{root}/{RESULT_DIR}"
    fs.create_dir(partial, recursive=True)
    for f in sorted(staging.iterdir()):
        with f.open("rb") as src, fs.open_output_stream(f"{partial}/{f.name}") as dst:
            shutil.copyfileobj(src, dst)
    if fs.get_file_info(final).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(final)  # a result of an earlier attempt that was never published
    fs.move(partial, final)
    return f"{run_dir.rstrip('/')}/{RESULT_DIR}"


def _target_modules(adapter_dir: Path) -> list[str]:
    targets = json.loads((adapter_dir / "adapter_config.json").read_text()).get("target_modules") or []
    return sorted(targets) if isinstance(targets, list) else [str(targets)]
