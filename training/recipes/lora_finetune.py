"""LoRA / QLoRA fine-tuning on Ray Train: DDP on CPU or GPU, DeepSpeed ZeRO-2/3 when configured.

Read it top to bottom: the driver's ``fit`` builds a ``TorchTrainer``; each worker runs
``train_loop_per_worker``, which is ``setup`` -> ``train`` -> ``cleanup`` of ``LoRAFinetuneRecipe``.

- Data arrives prepared (rendered, masked, packed) from the driver through the object store;
  every worker computes the same deterministic row order and takes its own shard, so a restart
  at step *s* sees exactly the micro-batches it would have seen.
- Loss is the mean over assistant tokens of the whole optimizer step (all micro-batches, all
  workers), not a mean of per-batch means, so packing and padding never re-weight examples.
- Checkpoints (adapter in PEFT format + optimizer/scheduler/step + metrics history) are reported
  with ``ray.train.report`` every ``checkpoint.every_steps`` and at the end. Ray Train restarts a
  worker group that lost a worker (``FailureConfig.max_failures``) and a re-submitted run with the
  same name from the latest checkpoint; ``setup`` restores it, and training continues from its step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from adept.finetuning.events import emit

STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.pt"
ADAPTER_DIR = "adapter"
DS_TAG = "zero"


# -- driver ------------------------------------------------------------------------------------
def fit(
    cfg: Any, model_dir: str, data_ref: Any, *, pad_id: int, base_model_id: str, fault_at_step: int = 0
) -> Any:
    """Run the job on Ray Train and return its ``ray.train.Result`` (raises if training failed)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    w = cfg.workers
    resources = dict(w.resources_per_worker or {"CPU": 1})
    if w.use_gpu:
        resources.setdefault("GPU", 1)
    loop_config = {
        "job": cfg.model_dump(mode="json"),
        "model_dir": str(model_dir),
        "data_ref": data_ref,
        "pad_id": pad_id,
        "base_model_id": base_model_id,
        "fault_at_step": fault_at_step,
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if w.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=w.num_workers, use_gpu=w.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=cfg.resolved_run_name,
            storage_path=cfg.resolved_storage_path,
            failure_config=FailureConfig(max_failures=cfg.checkpoint.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
        ),
    )
    return trainer.fit()


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    recipe = LoRAFinetuneRecipe(loop_config)
    try:
        recipe.setup()
        recipe.train()
    finally:
        recipe.cleanup()


# -- worker ------------------------------------------------------------------------------------
class LoRAFinetuneRecipe:
    """One worker's share of a LoRA/QLoRA job (``quantize_base`` selects QLoRA)."""

    def __init__(self, loop_config: dict[str, Any]) -> None:
        from adept.config.training import FineTuneJobConfig

        self.cfg = FineTuneJobConfig.model_validate(loop_config["job"])
        self.loop_config = loop_config
        self.tmp = Path(tempfile.mkdtemp(prefix="adept-ckpt-"))

    # -- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        import ray
        import ray.train
        import torch

        from training.builders import build_lora_model, build_optimizer, build_scheduler, trainable_parameters

        cfg, t = self.cfg, self.cfg.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        # One BLAS thread pool per reserved CPU: oversubscribed workers are many times slower.
        threads = cfg.workers.cpus_per_worker()
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        self.device = ray.train.torch.get_device() if cfg.workers.use_gpu else torch.device("cpu")
        self.use_ds = cfg.deepspeed.stage > 0

        data = self.loop_config["data_ref"]
        self.data = ray.get(data) if isinstance(data, ray.ObjectRef) else data
        self.steps_per_epoch = max(1, self._micro_per_epoch() // t.grad_accum_steps)
        self.total_steps = t.max_steps or t.epochs * self.steps_per_epoch
        warmup = round(t.warmup_ratio * self.total_steps)

        model = build_lora_model(
            self.loop_config["model_dir"],
            rank=cfg.lora.rank,
            alpha=cfg.lora.alpha,
            dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            quantize_base=cfg.quantize_base,
            quant_type=cfg.qlora.quant_type,
            double_quant=cfg.qlora.double_quant,
            compute_dtype=cfg.qlora.compute_dtype,
            device=str(self.device),
            dtype=t.dtype,
            gradient_checkpointing=t.gradient_checkpointing,
            seed=t.seed,
            init_adapter=cfg.lora.init_adapter,
        )
        # Served adapters name the base model by its canonical id, not this worker's local path.
        model.peft_config["default"].base_model_name_or_path = self.loop_config["base_model_id"]
        # Packed rows: attention within each document only, not over the whole row (training/loss.py).
        self.packed = bool(cfg.data.packing)
        if self.packed:
            from training.loss import use_packed_attention

            use_packed_attention(model)
        self.peft_model = model
        params = trainable_parameters(model)
        optimizer = build_optimizer(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        scheduler = build_scheduler(
            optimizer, schedule=t.lr_schedule, warmup_steps=warmup, total_steps=self.total_steps
        )
        if self.use_ds:
            import deepspeed

            from training.builders import build_deepspeed_config

            ds_config = build_deepspeed_config(
                stage=cfg.deepspeed.stage,
                micro_batch_size=t.batch_size,
                grad_accum_steps=t.grad_accum_steps,
                max_grad_norm=t.max_grad_norm,
                bf16=next(model.base_model.parameters()).dtype == torch.bfloat16,
                offload_optimizer=cfg.deepspeed.offload_optimizer,
                offload_params=cfg.deepspeed.offload_params,
            )
            # Reuses the process group Ray Train already set up (gloo on CPU, NCCL on GPU).
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model,
                optimizer=optimizer,
                lr_scheduler=scheduler,
                config=ds_config,
                dist_init_required=False,
            )
            self.model = self.engine
        else:
            self.optimizer, self.scheduler = optimizer, scheduler
            self.model = model
            if self.world > 1:
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.device.index] if self.device.type == "cuda" else None
                self.model = DistributedDataParallel(model, device_ids=ids)
        self.state = {
            "step": 0,
            "tokens_seen": 0,
            "label_tokens": 0,
            "train_seconds": 0.0,
            "history": [],
            "restarts": [],
        }
        self._restore()

    def _restore(self) -> None:
        import ray.train
        import torch

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return
        with ckpt.as_directory() as d:
            d = Path(d)
            self.state = json.loads((d / STATE_FILE).read_text())
            if self.use_ds:
                self.engine.load_checkpoint(str(d), tag=DS_TAG, load_module_strict=False)
            else:
                from peft import set_peft_model_state_dict
                from safetensors.torch import load_file

                weights = load_file(str(d / ADAPTER_DIR / "adapter_model.safetensors"))
                set_peft_model_state_dict(self.peft_model, weights)
                opt = torch.load(d / OPTIM_FILE, map_location="cpu", weights_only=True)
                self.optimizer.load_state_dict(opt["optimizer"])
                self.scheduler.load_state_dict(opt["scheduler"])
        self.state["restarts"].append({"from_step": self.state["step"], "at": time.time()})
        if self.rank == 0:
            emit("resumed", from_step=self.state["step"], total_steps=self.total_steps)

    # -- data --------------------------------------------------------------------------------
    def _micro_per_epoch(self) -> int:
        rows_per_rank = max(1, len(self.data.train) // self.world)
        return math.ceil(rows_per_rank / self.cfg.train.batch_size)

    def _micro_batch(self, index: int) -> dict[str, Any]:
        """Micro-batch ``index`` (counted from the start of training) of this worker."""
        from training.data import collate, epoch_order

        t = self.cfg.train
        per_epoch = self.steps_per_epoch * t.grad_accum_steps
        epoch, i = divmod(index, per_epoch)
        order = epoch_order(len(self.data.train), epoch, t.seed)
        mine = self._shard(order)
        rows = [self.data.train[j] for j in mine[i * t.batch_size : (i + 1) * t.batch_size]]
        return collate(rows, self.loop_config["pad_id"], self.cfg.data.packing)

    def _shard(self, order: list[int]) -> list[int]:
        # Equal shard sizes on every rank: DDP and ZeRO-3 need the same number of forwards everywhere.
        per = max(1, len(order) // self.world)
        return [order[(self.rank + self.world * k) % len(order)] for k in range(per)]

    # -- train -------------------------------------------------------------------------------
    def train(self) -> None:
        import torch

        t = self.cfg.train
        fault_at = self.loop_config.get("fault_at_step", 0)
        resumed = bool(self.state["restarts"])
        self.model.train()
        while self.state["step"] < self.total_steps:
            started = time.monotonic()
            step = self.state["step"]
            batches = [self._micro_batch(step * t.grad_accum_steps + k) for k in range(t.grad_accum_steps)]
            # Counted on the host from the host-side labels; one all-reduce when there are several workers.
            label_count = float(sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches))
            if self.world > 1:
                label_count = self._all_reduce(torch.tensor([label_count], device=self.device)).item()
            label_count = max(1.0, label_count)
            loss_sum = torch.zeros((), device=self.device)
            for k, batch in enumerate(batches):
                last = k == len(batches) - 1
                loss = self._token_loss_sum(batch)
                loss_sum += loss.detach()  # stays on the device: no host sync per micro-batch
                # Global per-token mean: DDP/DeepSpeed average gradients over ranks, hence * world.
                scaled = loss * self.world / label_count
                if self.use_ds:
                    self.engine.backward(
                        scaled * t.grad_accum_steps
                    )  # DeepSpeed divides by accumulation itself
                    self.engine.step()
                else:
                    sync = last or self.world == 1 or not hasattr(self.model, "no_sync")
                    ctx = self.model.no_sync() if not sync else _nullcontext()
                    with ctx:
                        scaled.backward()
            if not self.use_ds:
                if t.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.peft_model.parameters(), t.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            tokens = float(sum(b["num_tokens"] for b in batches))
            if self.world > 1:
                tokens = self._all_reduce(torch.tensor([tokens], device=self.device)).item()
            # The step's one host sync: the loss the metrics history records.
            train_loss = self._all_reduce(loss_sum.reshape(1)).item() / label_count
            self.state["step"] = step = step + 1
            self.state["tokens_seen"] += int(tokens)
            self.state["label_tokens"] += int(label_count)
            self.state["train_seconds"] += time.monotonic() - started
            self.state["peak_memory_mb"] = max(self.state.get("peak_memory_mb", 0.0), self._peak_memory_mb())
            if fault_at and step == fault_at and not resumed and self.rank == self.world - 1:
                self._die_after_checkpoint_is_registered()

            done = step >= self.total_steps
            metrics: dict[str, Any] = {
                "step": step,
                "train_loss": train_loss,
                "lr": self.scheduler.get_last_lr()[0],
            }
            if done or (t.eval_every_steps and step % t.eval_every_steps == 0):
                metrics.update(self.evaluate())
            metrics.update(tokens_seen=self.state["tokens_seen"], epoch=round(step / self.steps_per_epoch, 3))
            self.state["history"].append(metrics)
            if done or step % self.cfg.checkpoint.every_steps == 0:
                self._report(metrics, checkpoint=True)
            elif step % t.log_every_steps == 0:
                self._report(metrics, checkpoint=False)

    def _token_loss_sum(self, batch: dict[str, Any]) -> Any:
        """Sum of next-token cross-entropy over labelled (assistant) tokens of one micro-batch.

        Logits are computed for labelled positions only, and packed rows attend per document
        (``training.loss``; equal to the full forward: tests/unit/training/test_loss.py).
        """
        from training.loss import token_loss_sum

        return token_loss_sum(self.model, batch, self.device, packed_attention=self.packed)

    def evaluate(self) -> dict[str, float]:
        """Eval loss and perplexity over the held-out rows (every rank runs the same number of batches)."""
        import torch

        rows = self.data.eval
        if not rows:
            return {}
        from training.data import collate

        # Every row exactly once over all ranks; ranks short of rows re-run row 0 with no labels, so
        # every rank does the same number of forwards (ZeRO-3 gathers parameters collectively).
        n, bs = len(rows), self.cfg.train.batch_size
        mine = [self.rank + self.world * k for k in range(math.ceil(n / self.world))]
        loss_sum = torch.zeros(1, device=self.device)
        count = torch.zeros(1, device=self.device)
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(mine), bs):
                idx = mine[i : i + bs]
                batch = collate([rows[j % n] for j in idx], self.loop_config["pad_id"], self.cfg.data.packing)
                for b, j in enumerate(idx):
                    if j >= n:
                        batch["labels"][b] = -100
                loss_sum += self._token_loss_sum(batch).float()
                count += float((batch["labels"][:, 1:] != -100).sum())
        self.model.train()
        loss_sum, count = self._all_reduce(loss_sum), self._all_reduce(count)
        eval_loss = (loss_sum / count.clamp(min=1)).item()
        return {"eval_loss": eval_loss, "eval_perplexity": math.exp(min(eval_loss, 50.0))}

    def _peak_memory_mb(self) -> float:
        """Peak GPU memory allocated on GPU workers, peak resident set size on CPU workers."""
        import resource

        import torch

        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _all_reduce(self, x: Any) -> Any:
        import torch.distributed as dist

        if self.world > 1 and dist.is_initialized():
            dist.all_reduce(x)
        return x

    # -- checkpoints -------------------------------------------------------------------------
    def _report(self, metrics: dict[str, Any], *, checkpoint: bool) -> None:
        import ray.train

        name = f"checkpoint-{metrics['step']:07d}"
        if self.rank == 0:  # the structured progress event the job's driver reads (adept.finetuning.events)
            emit(
                "step",
                step=metrics["step"],
                total_steps=self.total_steps,
                train_loss=metrics["train_loss"],
                eval_loss=metrics.get("eval_loss"),
                lr=metrics["lr"],
                tokens=self.state["tokens_seen"],
                checkpoint=f"{self.cfg.resolved_run_dir}/{name}" if checkpoint else None,
            )
        if not checkpoint:
            ray.train.report(metrics)
            return
        ckpt_dir = self.tmp / f"step-{metrics['step']}"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._save(ckpt_dir)
        wrote = any(ckpt_dir.iterdir())
        ckpt = ray.train.Checkpoint.from_directory(str(ckpt_dir)) if wrote else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    def _save(self, d: Path) -> None:
        """Write this rank's part of a checkpoint: the PEFT adapter and trainer state come from rank 0."""
        import torch

        if self.use_ds:
            # Every rank writes its ZeRO shard of optimizer state; frozen base weights are not saved.
            self.engine.save_checkpoint(str(d), tag=DS_TAG, exclude_frozen_parameters=True)
        weights = self._adapter_state_dict()
        if self.rank != 0:
            return
        self.peft_model.save_pretrained(str(d / ADAPTER_DIR), state_dict=weights)
        (d / STATE_FILE).write_text(json.dumps(self.state))
        if not self.use_ds:
            torch.save(
                {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                d / OPTIM_FILE,
            )

    def _adapter_state_dict(self) -> dict[str, Any]:
        """Full adapter weights on CPU (under ZeRO-3 gathered from all ranks: every rank must call this)."""
        named = [(n, p) for n, p in self.peft_model.named_parameters() if p.requires_grad]
        if self.use_ds and self.cfg.deepspeed.stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
                return {n: p.detach().to("cpu", copy=True) for n, p in named}
        return {n: p.detach().to("cpu", copy=True) for n, p in named}

    def _die_after_checkpoint_is_registered(self) -> None:
        """Fault injection for tests (``ADEPT_TRAIN_FAULT_AT_STEP``): this worker process dies for real.

        It first waits until Ray Train has registered the latest checkpoint (the controller does so
        asynchronously), so the test observes a resume from that checkpoint rather than a race.
        """
        every = self.cfg.checkpoint.every_steps
        last = (self.state["step"] // every) * every
        snapshot = (
            Path(self.cfg.resolved_storage_path)
            / self.cfg.resolved_run_name
            / "checkpoint_manager_snapshot.json"
        )
        deadline = time.monotonic() + 120
        while last and time.monotonic() < deadline:
            if snapshot.is_file() and f"checkpoint-{last:07d}" in snapshot.read_text(errors="replace"):
                break
            time.sleep(0.2)
        os._exit(1)

    # -- cleanup -----------------------------------------------------------------------------
    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
