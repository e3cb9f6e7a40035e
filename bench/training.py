"""Fine-tuning benchmark: our recipe vs TRL's SFTTrainer (its defaults, and tuned), and QLoRA vs LoRA memory.

1. Same base model, same examples (one epoch), same LoRA config, batch size, learning rate and
   schedule: our recipe (Ray Train, packed rows, per-document attention, logits for labelled
   tokens only) vs TRL ``SFTTrainer`` with its defaults (padded batches, gradient checkpointing on)
   and tuned (``padding_free=True``, no gradient checkpointing). Equal steps and equal tokens: our
   packed row length is chosen so that one epoch is exactly as many optimizer steps as TRL's padded
   batches. Reported: training tokens/s (real, non-padding tokens over step time), peak memory,
   and the eval loss of each adapter on the same held-out examples computed the same way.
   Goals: >= 2x TRL defaults and >= 1.3x TRL tuned tokens/s, eval loss within 2 %.
   The three trainers run in alternation, ``--rounds`` times (default 3; a run takes well under two
   minutes), the order rotating each round; each ratio is the median of the per-round ratios.
2. QLoRA vs LoRA peak memory on the bundled model (a few training steps, the same builders).
   Goal: <= 0.45x. On CPU this is the peak resident memory of the process that trained (imports
   included, so a small model's ratio stays near 1); on a GPU ``torch.cuda.max_memory_allocated``.

Each measurement runs in its own fresh subprocess so peak-memory figures do not mix. All trainers
compute in ``--dtype`` (default: float32 on CPU, ``auto`` = bfloat16 on a GPU); on a GPU both our
recipe (``workers.use_gpu``) and TRL train on it.
``python bench/training.py [--quick] [--rounds N] [--dtype float32|bfloat16|auto]``
(``--quick``: the tiny test model, one round, < 2 min).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import (  # noqa: E402
    Figure,
    Run,
    dtype_name,
    peak_rss_mib,
    print_table,
    run_worker,
    worker_main,
)

DATA = REPO / "training" / "data" / "gridhelp.jsonl"
LORA = {"rank": 8, "alpha": 16, "dropout": 0.0}


def _model_dir(quick: bool) -> Path:
    if quick:
        from tests.assets.tiny_models import cached_tiny_phi3

        return cached_tiny_phi3(REPO / ".cache" / "test-assets")
    from adept.models import BUNDLED_MODEL, resolve_model

    return resolve_model(BUNDLED_MODEL, REPO / ".cache" / "test-assets" / "models")


def _bench_data(dest: Path, copies: int) -> tuple[Path, Path]:
    """Train/eval files where only the last assistant turn is trained (what TRL's prompt/completion does)."""
    lines = [json.loads(x) for x in DATA.read_text().splitlines() if x.strip()]
    convs = []
    for obj in lines:
        from training.data import parse_example

        msgs = parse_example(obj)
        convs.append([{"role": m["role"], "content": m["content"]} for m in msgs])
    train, evals = convs[6:] * copies, convs[:6]
    for path, rows in ((dest / "train.jsonl", train), (dest / "eval.jsonl", evals)):
        with path.open("w") as fh:
            for msgs in rows:
                for m in msgs[:-1]:
                    if m["role"] == "assistant":
                        m["weight"] = 0
                fh.write(json.dumps({"messages": msgs}) + "\n")
    return dest / "train.jsonl", dest / "eval.jsonl"


def eval_loss(model_dir: Path, adapter_dir: Path, eval_path: Path, max_len: int) -> float:
    """Mean loss over assistant tokens of the eval file, base + adapter, fp32, one example at a time."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adept.models import load_tokenizer
    from training.data import IGNORE_INDEX, read_examples, render_example

    tok = load_tokenizer(model_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32), str(adapter_dir)
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for msgs in read_examples(str(eval_path))[0]:
            ids, labels, _ = render_example(tok, msgs, max_len)
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, :-1]
            target = torch.tensor(labels[1:])
            total += torch.nn.functional.cross_entropy(
                logits, target, ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            count += int((target != IGNORE_INDEX).sum())
    return total / count


def _pack_len_for_steps(spec: dict, batch_size: int, seed: int) -> tuple[int, int]:
    """``(row length, rows)``: the shortest packed row length whose epoch has as many rows (= steps at
    micro-batch 1) as TRL's epoch has padded batches of ``batch_size``, so steps and tokens both match.

    Rows come from the recipe's own ``training.data.prepare`` (same shuffle, rendering and packing).
    """
    from adept.config.training import DataSection
    from adept.models import load_tokenizer
    from training.data import prepare, read_examples, render_example

    tok = load_tokenizer(spec["model"])

    def rows(length: int) -> int:
        cfg = DataSection(
            path=spec["train"], validation_path=spec["eval"], max_seq_length=length, packing=True
        )
        return prepare(cfg, tok, seed).stats["train_rows"]

    examples = read_examples(spec["train"])[0]
    target = math.ceil(len(examples) / batch_size)
    # From the longest example (each must fit one row) up to one row per epoch.
    lo = max(len(render_example(tok, m, spec["max_len"])[0]) for m in examples)
    hi = sum(len(render_example(tok, m, spec["max_len"])[0]) for m in examples)
    while lo < hi:  # fewer rows as rows get longer (first-fit packing): the shortest length with <= target
        mid = (lo + hi) // 2
        if rows(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo, rows(lo)


def synthetic_memory(hidden: int, layers: int, intermediate: int, vocab: int) -> dict:
    """LoRA vs QLoRA peak memory on a random Phi-3 of the given shape (e.g. Phi-3-mini: 3072,32,8192,32064)."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    dest = Path(tempfile.mkdtemp(prefix="adept-synth-"))
    cfg = Phi3Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 96,
        num_key_value_heads=hidden // 96,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Phi3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(dest)
    params = sum(p.numel() for p in model.parameters())
    del model
    out: dict = {"params": params, "runs": []}
    rows = []
    # With gradient checkpointing the weights dominate (what QLoRA shrinks); without, activations do.
    for batch, ckpt in ((1, True), (4, True), (4, False)):
        spec = {"model": str(dest), "batch": batch, "seq": 1024, "steps": 2, "gradient_checkpointing": ckpt}
        memory = {m: run_worker(__file__, "memory", {**spec, "method": m}) for m in ("lora", "qlora")}
        ratio = memory["qlora"]["peak_memory_mb"] / memory["lora"]["peak_memory_mb"]
        out["runs"].append({**spec, "memory": memory, "ratio": ratio})
        rows.append(
            [f"{batch} x 1024", "on" if ckpt else "off"]
            + [memory[m]["peak_memory_mb"] for m in ("lora", "qlora")]
            + [ratio]
        )
    print_table(
        f"QLoRA vs LoRA peak memory, random Phi-3 {params / 1e9:.2f} B params",
        ["batch", "checkpointing", "LoRA MiB", "QLoRA MiB", "ratio"],
        rows,
    )
    out["ratio"] = out["runs"][0]["ratio"]
    return out


# -- workers (each in its own process) -----------------------------------------------------------
def worker_ours(spec: dict) -> dict:
    from adept.config.base import load_config
    from adept.config.training import FineTuneJobConfig
    from training.finetune import run_job

    cfg = load_config(
        FineTuneJobConfig,
        None,
        env=False,
        base={
            "tenant": "bench",
            "adapter": "ours",
            "base_model": spec["model"],
            "lora": LORA,
            # One packed row per micro-batch, as long as TRL's average padded batch: about the same
            # optimizer steps and tokens per step, so the comparison isolates packing vs padding.
            "data": {
                "path": spec["train"],
                "validation_path": spec["eval"],
                "max_seq_length": spec["pack_len"],
                "packing": True,
            },
            "train": {**spec["train_args"], "batch_size": 1, "eval_every_steps": 0, "log_every_steps": 5},
            "workers": {
                "num_workers": 1,
                "use_gpu": spec[
                    "gpu"
                ],  # the recipe on the GPU when TRL is (it would be on the CPU otherwise)
                "resources_per_worker": {"CPU": os.cpu_count() or 1, **({"GPU": 1} if spec["gpu"] else {})},
            },
            "checkpoint": {"every_steps": 10_000},
            # Training speed is the figure: nothing is published (no tenant, no registry involved).
            "output": {"data_dir": spec["workdir"], "publish": False},
        },
    )
    result = run_job(cfg, address="local")
    return {
        "tokens": result["tokens_seen"],
        "seconds": result["train_seconds"],
        "steps": result["steps"],
        "peak_memory_mb": result["peak_memory_mb"],
        "adapter": result["result"],  # the run's result dir (PEFT files): nothing was published
    }


def worker_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from adept.config.training import default_target_modules
    from adept.models import load_causal_lm, load_tokenizer, resolve_dtype

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for line in Path(spec["train"]).read_text().splitlines():
        msgs = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
    tok = load_tokenizer(spec["model"])
    model = load_causal_lm(spec["model"], dtype=spec["train_args"]["dtype"])
    a = spec["train_args"]
    batch, lr = a["batch_size"], a["learning_rate"]
    tuned = bool(spec.get("tuned"))
    # Tuned: padding-free batches (each example its own sequence, flash/varlen-style) and no gradient
    # checkpointing (TRL 1.16 turns it on by default); padding_free without packing needs max_length=None.
    extra = {"padding_free": True, "gradient_checkpointing": False, "max_length": None} if tuned else {}
    extra.setdefault("max_length", spec["max_len"])
    gpu = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(Path(spec["workdir"]) / "trl"),
        per_device_train_batch_size=batch,
        num_train_epochs=1,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=a["warmup_ratio"],  # transformers 5: a float < 1 is a ratio
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=a["seed"],
        use_cpu=not gpu,
        bf16=resolve_dtype("cuda" if gpu else "cpu", a["dtype"]) == torch.bfloat16,
        dataloader_num_workers=0,
        **extra,
    )
    targets = default_target_modules(model.config.model_type)
    peft_cfg = LoraConfig(
        r=LORA["rank"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )

    class Clock(TrainerCallback):
        start = end = 0.0
        tokens = 0

        def on_step_begin(self, *_a, **_k):
            if not self.start:
                self.start = time.monotonic()

        def on_train_end(self, *_a, **_k):
            self.end = time.monotonic()

    clock = Clock()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=peft_cfg,
        callbacks=[clock],
    )
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])  # real tokens; padding excluded
    trainer.train()
    out = Path(spec["workdir"]) / "trl-adapter"
    trainer.model.save_pretrained(str(out))
    return {
        "tokens": tokens,
        "seconds": clock.end - clock.start,
        "steps": trainer.state.global_step,
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else peak_rss_mib(),
        "adapter": str(out),
    }


def worker_memory(spec: dict) -> dict:
    """Peak memory of a few LoRA or QLoRA training steps (same builders as the recipe)."""
    import torch

    from training.builders import build_lora_model, build_optimizer, trainable_parameters

    device = "cuda" if torch.cuda.is_available() else "cpu"
    before = peak_rss_mib()  # imports only: what every run pays before the model
    model = build_lora_model(
        spec["model"],
        **LORA,
        quantize_base=spec["method"] == "qlora",
        device=device,
        dtype=spec.get("dtype", "bfloat16"),
        compute_dtype=spec.get("dtype", "bfloat16"),
        gradient_checkpointing=spec.get("gradient_checkpointing", False),
    )
    model.train()  # as the recipe does: gradient checkpointing only acts in train mode
    opt = build_optimizer(trainable_parameters(model), lr=1e-4, weight_decay=0.0)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(10, vocab, (spec["batch"], spec["seq"]), device=device)
    for _ in range(spec["steps"]):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    if device == "cuda":
        return {
            "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20,
            "device": device,
            "measure": "cuda",
        }
    # The whole process's peak (never a difference: that is 0 whenever loading peaked before training).
    return {"peak_memory_mb": peak_rss_mib(), "imports_mb": before, "device": device, "measure": "peak RSS"}


def _spawn(kind: str, spec: dict) -> dict:
    return run_worker(__file__, kind, spec, env={"RAY_USAGE_STATS_ENABLED": "0"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny test model, small sizes (< 2 min)")
    p.add_argument(
        "--synthetic-phi3",
        metavar="HIDDEN,LAYERS,INTERMEDIATE,VOCAB",
        help="only QLoRA vs LoRA memory on a random Phi-3 of this shape (Phi-3-mini: 3072,32,8192,32064)",
    )
    p.add_argument("--rounds", type=int, help="alternated rounds of the three trainers (default 3, quick 1)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "auto"],
        help="compute dtype of every trainer (default: float32 on CPU, auto on a GPU)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_main({"ours": worker_ours, "trl": worker_trl, "memory": worker_memory}, args.worker, args.spec)
        return
    if args.synthetic_phi3:
        synthetic(args)
        return
    if args.dtype is None:
        import torch

        args.dtype = "auto" if torch.cuda.is_available() else "float32"
    run = Run("training", args)

    import torch

    gpu = torch.cuda.is_available()
    model = _model_dir(args.quick)
    dtype = _auto_dtype() if args.dtype == "auto" else args.dtype
    rounds = args.rounds or (1 if args.quick else 3)
    max_len = 256 if args.quick else 512
    kinds = {"ours": ("ours", {}), "trl": ("trl", {}), "trl_tuned": ("trl", {"tuned": True})}
    with tempfile.TemporaryDirectory(prefix="adept-bench-") as tmp:
        train, evals = _bench_data(Path(tmp), copies=1 if args.quick else 2)
        train_args = {
            "epochs": 1,
            "batch_size": 4,
            "learning_rate": 5e-3 if args.quick else 2e-4,
            "warmup_ratio": 0.1,
        }
        train_args.update(lr_schedule="cosine", seed=0, dtype=dtype)
        spec = {
            "model": str(model),
            "train": str(train),
            "eval": str(evals),
            "max_len": max_len,
            "train_args": train_args,
            "gpu": gpu,
        }
        spec["pack_len"], rows = _pack_len_for_steps(spec, train_args["batch_size"], train_args["seed"])
        print(f"{dtype}; packed rows of {spec['pack_len']} tokens: {rows} steps per epoch", flush=True)
        rounds_out: list[dict[str, dict]] = []
        order = list(kinds)
        for r in range(rounds):  # alternated: the order rotates, so drift in machine load hits all alike
            this = order[r % len(order) :] + order[: r % len(order)]
            got = {}
            for kind in this:
                worker, extra = kinds[kind]
                got[kind] = _spawn(worker, {**spec, **extra, "workdir": str(Path(tmp) / f"{kind}-{r}")})
                got[kind]["tokens_per_s"] = got[kind]["tokens"] / got[kind]["seconds"]
                if r == 0:  # the same seed and data every round: one eval per trainer
                    got[kind]["eval_loss"] = eval_loss(model, Path(got[kind]["adapter"]), evals, max_len)
                print(f"round {r + 1}/{rounds}", kind, json.dumps(got[kind]), flush=True)
            rounds_out.append(got)
        mem_spec = {
            "model": str(model),
            "batch": 2,
            "seq": 128 if args.quick else 256,
            "steps": 2,
            "dtype": dtype,
        }
        memory = {m: _spawn("memory", {**mem_spec, "method": m}) for m in ("lora", "qlora")}

    first = rounds_out[0]
    losses_of = {k: first[k]["eval_loss"] for k in kinds}
    name = "tiny Phi-3" if args.quick else "bundled SmolLM2-135M"
    device = torch.cuda.get_device_name(0) if gpu else "CPU"
    print_table(
        f"Fine-tuning, {name} ({dtype}, {device}): our recipe vs TRL SFTTrainer, 1 epoch, equal steps and tokens",
        ["round", "trainer", "steps", "tokens", "tokens/s", "eval loss", "peak MiB"],
        [
            [i + 1, k, x["steps"], x["tokens"], x["tokens_per_s"], losses_of[k], x["peak_memory_mb"]]
            for i, got in enumerate(rounds_out)
            for k, x in got.items()
        ],
    )
    figures, summary, ratios = [], [], {}
    mem = memory["lora"]
    for base, label, goal in (
        ("trl", "TRL SFTTrainer defaults", 2.0),
        ("trl_tuned", "TRL SFTTrainer tuned", 1.3),
    ):
        per_round = sorted(
            (got["ours"]["tokens_per_s"] / got[base]["tokens_per_s"], i) for i, got in enumerate(rounds_out)
        )
        ratio, mid = per_round[len(per_round) // 2]  # the median round (odd rounds: a real one)
        ours, theirs = rounds_out[mid]["ours"], rounds_out[mid][base]
        loss_diff = abs(losses_of["ours"] - losses_of[base]) / losses_of[base]
        ratios[base] = {
            "median": ratio,
            "per_round": [x for x, _ in per_round],
            "eval_loss_rel_diff": loss_diff,
        }
        tuned = " (padding_free=True, no gradient checkpointing)" if base == "trl_tuned" else ""
        same = f"{ours['steps']} vs {theirs['steps']} steps, {ours['tokens']} vs {theirs['tokens']} tokens"
        figures.append(Figure(
            f"fine-tuning tokens/s vs {label}, {name}, 1 epoch, {device}", ours["tokens_per_s"], "tokens/s",
            f"{label}{tuned}", theirs["tokens_per_s"],
            note=f"median of {rounds} alternated rounds (ratios {', '.join(f'{x:.2f}' for x, _ in per_round)}; "
            f"goal >= {goal}); eval loss {losses_of['ours']:.4f} vs {losses_of[base]:.4f} "
            f"({loss_diff:.2%}, goal <= 2 %); {same}",
        ))  # fmt: skip
        summary += [[f"tokens/s ratio (ours / {label})", ratio, f">= {goal}"],
                    [f"eval loss difference vs {label}", f"{loss_diff:.2%}", "<= 2 %"]]  # fmt: skip
    mem_ratio = memory["qlora"]["peak_memory_mb"] / mem["peak_memory_mb"]
    summary.append([f"QLoRA / LoRA peak memory ({mem['measure']})", mem_ratio, "<= 0.45"])
    print_table("Summary", ["metric", "value", "goal"], summary)
    figures += [
        Figure(f"eval loss after that epoch, {name}", losses_of["ours"], "nats/token", "TRL SFTTrainer defaults",
               losses_of["trl"], higher_is_better=False,
               note=f"TRL tuned {losses_of['trl_tuned']:.4f}; difference "
               f"{ratios['trl']['eval_loss_rel_diff']:.2%} / {ratios['trl_tuned']['eval_loss_rel_diff']:.2%} "
               "(goal <= 2 %)"),
        Figure(f"QLoRA peak memory, {name}, 2 steps of {mem_spec['batch']} x {mem_spec['seq']}",
               memory["qlora"]["peak_memory_mb"], "MiB", "LoRA", mem["peak_memory_mb"], higher_is_better=False,
               note=f"{mem['measure']} of a fresh process"
               + (f" ({mem['imports_mb']:.0f} MiB of it imports)" if "imports_mb" in mem else "")),
    ]  # fmt: skip
    run.write(
        figures,
        dtype=dtype,
        details={
            "model": str(model),
            "device": device,
            "pack_len": spec["pack_len"],
            "rounds": [
                {k: {x: v for x, v in r.items() if x != "adapter"} for k, r in got.items()}
                for got in rounds_out
            ],
            "eval_loss": losses_of,
            "tokens_per_s_ratio": ratios,
            "memory": memory,
            "qlora_lora_memory_ratio": mem_ratio,
        },
    )


def _auto_dtype() -> str:
    """What ``dtype: auto`` resolves to here: bfloat16 on GPUs and bf16-capable CPUs, else float32."""
    import torch

    from adept.models import resolve_dtype

    return dtype_name(resolve_dtype("cuda" if torch.cuda.is_available() else "cpu", "auto"))


def synthetic(args: argparse.Namespace) -> None:
    """``--synthetic-phi3``: QLoRA vs LoRA memory on a random Phi-3 of the given shape."""
    run = Run("training_synthetic_memory", args)
    shape = [int(x) for x in args.synthetic_phi3.split(",")]
    out = synthetic_memory(*shape)
    figures = [
        Figure(f"QLoRA peak memory, random Phi-3 {out['params'] / 1e9:.2f} B, {r['batch']} x {r['seq']}, "
               f"checkpointing {'on' if r['gradient_checkpointing'] else 'off'}",
               r["memory"]["qlora"]["peak_memory_mb"], "MiB", "LoRA", r["memory"]["lora"]["peak_memory_mb"],
               higher_is_better=False, note=r["memory"]["lora"]["measure"])
        for r in out["runs"]
    ]  # fmt: skip
    run.write(figures, dtype="bfloat16", details={"shape": shape, **out})


if __name__ == "__main__":
    main()
