"""The demo's four-route table from scratch, in one command: ``make demo-routes``.

1. the demo tenant exists in the data dir (created here if not);
2. its adapter ``lumen-style`` is trained on ``adept/demo/finetune.jsonl`` with the ``auto``
   hyper-parameters for that many examples (``training.finetune``, the one training path) and
   published, unless a version is already there;
3. an embedded platform starts on the data dir (demo corpus ingested), and ``adept eval`` runs the
   four routes on the held-out half of the demo questions (``--tag heldout``: the half no prompt
   tuning looked at), writing ``report.json``, ``report.md`` and the PNGs to ``--out``.

Rerunning reuses the trained adapter; ``--retrain`` trains a new version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

DEMO_ADAPTER = "lumen-style"


def _ensure_tenant(data_dir: Path) -> None:
    from adept.config.platform import load_platform_config
    from adept.config.tenant import TenantSpec
    from adept.demo import TENANT
    from adept.errors import NotFound
    from adept.platform import Platform

    platform = Platform(load_platform_config(data_dir))
    try:
        try:
            asyncio.run(platform.get_tenant(TENANT))
        except NotFound:
            asyncio.run(platform.create_tenant(TenantSpec(name=TENANT, display_name="Lumen Grid Co. (demo)")))
    finally:
        platform.close()


def _has_adapter(data_dir: Path) -> bool:
    from adept.adapters import AdapterRegistry
    from adept.config.platform import load_platform_config
    from adept.demo import TENANT

    cfg = load_platform_config(data_dir)
    return bool(AdapterRegistry(cfg.resolved_adapter_store).versions(TENANT, DEMO_ADAPTER))


def _subset(n_facts: int, out: Path) -> Path:
    """``n_facts`` facts spread over the documents: each under every phrasing, and with its passages."""
    from adept.demo.make_finetune import FACTS, TEMPLATES, build_examples, render

    examples = build_examples()
    picked = list(range(0, len(FACTS), max(1, len(FACTS) // n_facts)))[:n_facts]
    blocks = len(TEMPLATES) + 1  # the phrasings, then the passage examples
    out.write_text(
        render([examples[b * len(FACTS) + i] for b in range(blocks) for i in picked]), encoding="utf-8"
    )
    return out


def train_demo_adapter(data_dir: Path, n_facts: int | None = None) -> dict:
    """Train and publish ``demo/lumen-style`` with the ``auto`` hyper-parameters for the demo examples
    (all of them, or ``n_facts`` facts' worth: a quicker, weaker adapter)."""
    from adept.config.base import load_config
    from adept.config.finetuning import FineTuningConfig, auto_hyperparameters
    from adept.config.platform import load_platform_config
    from adept.config.training import FineTuneJobConfig
    from adept.demo import TENANT, finetune_path
    from training.finetune import run_job

    data = finetune_path() if not n_facts else _subset(n_facts, data_dir / "demo-subset.jsonl")
    n = sum(1 for line in data.read_text(encoding="utf-8").splitlines() if line.strip())
    hp = auto_hyperparameters(n)
    settings = FineTuningConfig()
    platform = load_platform_config(data_dir)
    cfg = load_config(
        FineTuneJobConfig,
        None,
        env=False,
        base={
            "tenant": TENANT,
            "adapter": DEMO_ADAPTER,
            "description": f"demo: house format and vocabulary ({n} examples, auto: {hp})",
            "lora": {"rank": settings.default_lora_rank, "alpha": 2.0 * settings.default_lora_rank},
            "data": {"path": str(data), "validation_split": 0.0, "packing": hp.packing},
            "train": {
                "epochs": hp.n_epochs,
                "batch_size": hp.batch_size,
                "learning_rate": settings.base_learning_rate * hp.learning_rate_multiplier,
                "seed": 0,
                "eval_every_steps": 0,
                "log_every_steps": 10,
            },
            "workers": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
            "output": {"data_dir": str(data_dir), "publish": True},
        },
    )
    return run_job(cfg, address="local", platform=platform)


def main(argv: list[str] | None = None) -> int:
    from adept.demo import eval_questions_path
    from adept.evalset import load_eval_set
    from tools.eval.client import PlatformClient
    from tools.eval.report import print_report, write_report
    from tools.eval.routes import Decoding
    from tools.eval.runner import EvalOptions, embedded_platform, run_eval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(".adept-routes"))
    ap.add_argument("--out", type=Path, default=Path("eval-report"))
    ap.add_argument("--tag", default="heldout", help="Question split to report on ('' for all).")
    ap.add_argument("--port", type=int, default=8010)
    ap.add_argument("--retrain", action="store_true", help="Train a new adapter version even if one exists.")
    ap.add_argument("--facts", type=int, default=0, help="Train on this many facts only (quicker; 0: all).")
    ap.add_argument("--max-tokens", type=int, default=64, help="Most tokens per answer.")
    args = ap.parse_args(argv)
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    _ensure_tenant(data_dir)
    if args.retrain or not _has_adapter(data_dir):
        print(json.dumps({"trained": train_demo_adapter(data_dir, args.facts)}, default=str), flush=True)
    eval_set = load_eval_set(eval_questions_path())
    eval_set = eval_set.with_tag(args.tag) if args.tag else eval_set
    overrides = [f"gateway.port={args.port}", "finetuning.enabled=false"]
    with embedded_platform(data_dir, overrides, say=print) as (url, key), PlatformClient(url, key) as client:
        options = EvalOptions(adapter=DEMO_ADAPTER, decoding=Decoding(max_tokens=args.max_tokens))
        report = run_eval(client, eval_set, options)
    print_report(report)
    paths = write_report(report, args.out)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
