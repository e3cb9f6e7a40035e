"""Fine-tuning job entry point: ``python -m training.finetune --config job.yaml [key=value ...]``.

Made for ``ray job submit --working-dir . -- python -m training.finetune --config job.yaml``:
inside a Ray job (or wherever ``RAY_ADDRESS`` or a running cluster is found) it joins that
cluster; otherwise it starts a local Ray with its temp dir under the data dir.

What the job leaves unset — base model, data dir, adapter store — comes from the platform's
configuration (``$ADEPT_CONFIG`` and ``ADEPT_*``, as every Adept process reads it), so a job
names only what is its own. Order matters for fast failure: the config (all errors at once),
the dataset (every bad line) and whether the result could be published (tenant, quota, base
model) are checked before Ray starts; only then are workers started. Re-submitting a job with
the same run name resumes it from its latest checkpoint, and a finished run is not published twice.

The trained adapter goes to ``<run dir>/result`` (``adept.training_runs``); on one machine this
job then publishes it (``Platform.publish_run``); on a cluster (``training_publish: handoff``) the
job holds no platform credentials and the operator publishes it when the FineTuneJob succeeds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from adept.errors import AdeptError, Conflict, NotFound, Unavailable
from adept.finetuning.events import emit
from adept.training_runs import JOB_STATE_FILE as JOB_STATE
from adept.training_runs import RESULT_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.finetune", description=__doc__.splitlines()[0])
    p.add_argument("--config", "-c", required=True, help="job YAML (see training/configs/)")
    p.add_argument(
        "--address",
        default="auto",
        help="Ray cluster: auto (RAY_ADDRESS or a running cluster, else local), local (always start one), or an address",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate config and dataset, print the plan, train nothing"
    )
    p.add_argument(
        "overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=20 method=qlora"
    )
    return p.parse_args(argv)


def load_job(path: str, overrides: list[str]) -> Any:
    from adept.config.base import load_config
    from adept.config.training import FineTuneJobConfig

    return load_config(FineTuneJobConfig, path, overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run_job(load_job(args.config, args.overrides), address=args.address, dry_run=args.dry_run)
    except AdeptError as e:
        print(f"error: {e.message}", file=sys.stderr, flush=True)
        # Typed, for the job's driver (adept.finetuning.runner), whichever executor ran it.
        emit("error", code=e.code, message=e.message, param=e.param)
        return e.exit_code
    emit("result", **result)
    return 0


def run_job(
    cfg: Any, *, address: str = "auto", dry_run: bool = False, platform: Any = None
) -> dict[str, Any]:
    """Validate, train on Ray, publish; returns a summary (adapter id, metrics, paths).

    Args:
        cfg: The job (``FineTuneJobConfig``).
        address: Ray cluster: ``auto``, ``local`` or an address.
        dry_run: Validate and plan only.
        platform: The ``PlatformConfig`` the job belongs to; default: this process's (env, ``$ADEPT_CONFIG``).
    """
    from adept.config.platform import load_platform_config
    from adept.models import canonical_model_id, resolve_model
    from training.builders import build_tokenizer
    from training.data import prepare

    started = time.time()
    platform = platform or load_platform_config()
    cfg.check_publisher(platform)
    cfg = cfg.bind(platform)
    model_dir = resolve_model(cfg.resolved_base_model, cfg.resolved_data_dir / "models")
    base_model_id = canonical_model_id(cfg.resolved_base_model)
    publisher = _publisher(cfg, platform) if cfg.output.publish else None
    if publisher is not None:
        try:
            asyncio.run(publisher.check_publishable(cfg.tenant, cfg.adapter, base_model_id))
        except NotFound as e:
            where = (
                platform.data_dir if platform.tenant_store == "sqlite" else "the cluster's Tenant resources"
            )
            raise NotFound(
                f"{e.message} in the platform at {where} (set ADEPT_DATA_DIR / ADEPT_CONFIG to the platform's, "
                "create the tenant, or publish nothing from this job with output.publish=false)"
            ) from None
    tokenizer = build_tokenizer(model_dir)
    prepared = prepare(cfg.data, tokenizer, cfg.train.seed)
    _say(f"dataset {cfg.data.path}: {json.dumps(prepared.stats)}")

    run_dir = cfg.resolved_run_dir
    state = _read_json(run_dir, JOB_STATE)
    fingerprint = f"{cfg.fingerprint()}-{prepared.dataset_hash[7:23]}"
    if state and state.get("fingerprint") != fingerprint:
        raise Conflict(
            f"run {cfg.resolved_run_name!r} in {cfg.resolved_storage_path} was started with a different config or "
            "dataset; resume it unchanged, or start a new run with output.run_name=<new name>"
        )
    state = state or {
        "run_id": f"{cfg.resolved_run_name}-{uuid.uuid4().hex[:8]}",
        "fingerprint": fingerprint,
        "tenant": cfg.tenant,  # deleting the tenant deletes this run (adept.platform.TrainingRuns)
        "adapter": cfg.adapter,
    }
    plan = {
        "run": cfg.resolved_run_name,
        "run_dir": run_dir,
        "model": base_model_id,
        "method": cfg.method,
        **prepared.stats,
    }
    if dry_run:
        return {"dry_run": True, **plan}
    if state.get("result"):  # trained before: only what is left of publishing is done
        _say(f"run {cfg.resolved_run_name} already finished; its result is in {run_dir}/{RESULT_DIR}")
        return {**_hand_over(publisher, cfg, run_dir, state), "run_dir": run_dir, "resumed": True}
    _write_json(run_dir, JOB_STATE, state)

    stop_ray, env_before = _init_ray(address, cfg)
    try:
        import ray

        from training.recipes.lora_finetune import fit

        result = fit(
            cfg,
            str(model_dir),
            ray.put(prepared),
            pad_id=tokenizer.pad_token_id,
            base_model_id=base_model_id,
            fault_at_step=int(os.environ.get("ADEPT_TRAIN_FAULT_AT_STEP", "0") or 0),
        )
        if result.error is not None:
            raise Unavailable(f"training failed: {result.error}")
        if result.checkpoint is None:
            raise Unavailable("training finished without a checkpoint")
        summary: dict[str, Any] = {"run_dir": run_dir, "checkpoint": result.checkpoint.path}
        with result.checkpoint.as_directory() as ckpt:
            from training.publish import final_summary
            from training.recipes.lora_finetune import STATE_FILE

            summary.update(final_summary(json.loads((Path(ckpt) / STATE_FILE).read_text())))
            from training.publish import stage_result

            summary["result"] = stage_result(
                cfg,
                Path(ckpt),
                run_dir,
                run_id=state["run_id"],
                base_model_id=base_model_id,
                dataset_hash=prepared.dataset_hash,
                duration_s=time.time() - started,
            )
        state = {**state, "result": RESULT_DIR}  # complete: a publisher may take it from here
        _write_json(run_dir, JOB_STATE, state)
        summary.update(_hand_over(publisher, cfg, run_dir, state))
        _say(f"done: {summary.get('adapter', '(not published)')} after {summary['steps']} steps")
        return summary
    finally:
        if stop_ray:
            import ray

            ray.shutdown()
        if env_before is not None:
            from adept.ray_auth import restore_env

            restore_env(env_before)


def _hand_over(publisher: Any, cfg: Any, run_dir: str, state: dict[str, Any]) -> dict[str, Any]:
    """Publish the run's result from here (``publisher``), or leave it to the platform's publisher."""
    if publisher is None:
        _say(f"result left in {run_dir}/{RESULT_DIR} for the platform's publisher (output.publish is off)")
        return {"result": f"{run_dir}/{RESULT_DIR}"}
    # Eval-gated promotion: a job naming an evaluation file never makes its version live by itself.
    # Under the platform's job owner (API, FineTuneJob, `adept finetune`) the owner then measures it
    # against the active version and decides (adept.finetuning.promotion); a bare `ray job submit`
    # has no evaluator here (training holds no model server), so the version waits, inactive.
    gated = cfg.evaluation_file is not None
    version = asyncio.run(publisher.publish_run(run_dir, cfg.tenant, cfg.adapter, inactive=gated))
    if state.get("published") != version.id:
        _write_json(run_dir, JOB_STATE, {**state, "published": version.id})
    out = {"adapter": version.id, "path": str(version.path)}
    if gated:
        served = asyncio.run(publisher.resolve_adapter(cfg.tenant, cfg.adapter)).version
        out["active_version"] = served
        if served != version.version:
            _say(
                f"{version.id} published inactive (evaluation_file {cfg.evaluation_file}): {cfg.tenant}/"
                f"{cfg.adapter}@{served} keeps serving until the job owner measures it, or "
                f"`adept adapter activate {cfg.tenant} {cfg.adapter} {version.version}`"
            )
    return out


def _publisher(cfg: Any, platform: Any) -> Any:
    """The kernel ``Platform`` the result is published through (quotas, base-model policy)."""
    from adept.adapters import AdapterRegistry
    from adept.platform import Platform

    registry = AdapterRegistry(
        cfg.resolved_adapter_store, cache_dir=cfg.resolved_data_dir / "cache" / "adapters"
    )
    return Platform(platform, registry=registry)


def _init_ray(address: str, cfg: Any) -> tuple[bool, dict[str, str | None] | None]:
    """Connect to a cluster or start a local one.

    Returns whether this process started Ray, and the environment to restore afterwards when it
    started a local cluster (which runs with token auth and its own token, ``adept.ray_auth``).
    """
    import ray

    if ray.is_initialized():
        return False, None
    if address != "local":
        target = os.environ.get("RAY_ADDRESS") if address == "auto" else address
        try:
            ray.init(address=target or "auto", log_to_driver=True)
            return True, None
        except ConnectionError:
            if address != "auto" or target:
                raise Unavailable(f"cannot reach the Ray cluster at {target or address}") from None
    from adept.ray_auth import use_local_cluster_env

    # DeepSpeed JIT-builds its CPU communication op once; keep the build with Adept's data.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cfg.resolved_data_dir / "cache" / "torch_extensions"))
    needed = cfg.workers.num_workers * cfg.workers.cpus_per_worker()
    env_before = use_local_cluster_env(cfg.resolved_data_dir)
    try:
        ray.init(
            num_cpus=max(os.cpu_count() or 1, needed),
            num_gpus=None if cfg.workers.use_gpu else 0,
            include_dashboard=False,
            _temp_dir=_ray_temp_dir(cfg.resolved_data_dir),
        )
    except BaseException:
        from adept.ray_auth import restore_env

        restore_env(env_before)
        raise
    return True, env_before


def _ray_temp_dir(data_dir: Path) -> str:
    # Ray's unix socket paths (temp dir + ~65 chars of session/socket names) must stay under 107 bytes.
    preferred = data_dir / "ray"
    if len(str(preferred)) <= 40:
        preferred.mkdir(parents=True, exist_ok=True)
        return str(preferred)
    return f"/tmp/adept-ray-{os.getuid()}"


def _fs(uri: str) -> tuple[Any, str]:
    import pyarrow.fs

    if "://" not in uri:
        uri = str(Path(uri).expanduser().absolute())
    return pyarrow.fs.FileSystem.from_uri(uri)


def _read_json(run_dir: str, name: str) -> dict[str, Any] | None:
    import pyarrow.fs

    fs, path = _fs(run_dir)
    try:
        with fs.open_input_stream(f"{path}/{name}") as fh:
            return json.loads(fh.read().decode())
    except (FileNotFoundError, pyarrow.lib.ArrowIOError, ValueError):
        return None


def _write_json(run_dir: str, name: str, data: dict[str, Any]) -> None:
    fs, path = _fs(run_dir)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{name}") as fh:
        fh.write(json.dumps(data, indent=2).encode())


def _say(msg: str) -> None:
    print(f"[adept.finetune] {msg}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
