"""``adept finetune``: run a fine-tuning job here, or submit it to a Ray cluster and follow its logs."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from adept.cli.common import console, handle_errors, platform_config
from adept.cli.config_cmd import DataDirOption, SetOption
from adept.errors import ConfigError, Unavailable

app = typer.Typer()

# Never upload these with the job: environments, caches, local data, results.
_EXCLUDES = [
    ".venv",
    ".git",
    ".cache",
    ".adept",
    "bench/results",
    "node_modules",
    "**/__pycache__",
    "*.egg-info",
]


def _repo_root() -> Path:
    import training

    return Path(training.__file__).resolve().parent.parent


@app.command()
@handle_errors
def finetune(
    config: Path = typer.Option(..., "--config", "-c", help="Job YAML (see training/configs/)."),
    overrides: list[str] = typer.Argument(
        None, help="key.sub=value overrides, e.g. train.max_steps=20 method=qlora"
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Ray dashboard/jobs address (http://head:8265) to submit to; default: run here.",
    ),
    follow: bool = typer.Option(True, help="With --address: stream the job's logs until it ends."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate config and dataset, print the plan, train nothing."
    ),
    data_dir: DataDirOption = None,
    platform_overrides: SetOption = None,
) -> None:
    """Fine-tune a LoRA/QLoRA adapter and publish it to the adapter registry.

    The base model, data dir and adapter store default to the platform's (``--data-dir``,
    ``--set``, ``ADEPT_*``); the job file names only what is its own.
    """
    from training.finetune import load_job

    overrides = list(overrides or [])
    cfg = load_job(str(config), overrides)  # every config error, before anything starts
    platform = platform_config(data_dir, platform_overrides)
    if address is None:
        import json

        from training.finetune import run_job

        result = run_job(cfg, address="auto", dry_run=dry_run, platform=platform)
        console.print_json(json.dumps(result))
        return
    env = _platform_env(data_dir, platform_overrides)
    _submit(config, overrides, address, follow=follow, dry_run=dry_run, env=env)


def _platform_env(data_dir: str | None, overrides: list[str] | None) -> dict[str, str]:
    """The platform settings given on this command line, as the ``ADEPT_*`` variables the job reads."""
    env = {"ADEPT_DATA_DIR": data_dir} if data_dir else {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        env["ADEPT_" + key.strip().upper().replace(".", "__")] = value
    return env


def _submit(
    config: Path, overrides: list[str], address: str, *, follow: bool, dry_run: bool, env: dict[str, str]
) -> None:
    """Submit ``python -m training.finetune`` with the repository as the job's working dir."""
    root = _repo_root()
    try:
        rel = config.resolve().relative_to(root)
    except ValueError:
        raise ConfigError(
            f"{config} is outside {root}: a submitted job sees only the working dir; put the config inside it"
        ) from None
    entry = [
        "python",
        "-m",
        "training.finetune",
        "--config",
        str(rel),
        *(["--dry-run"] if dry_run else []),
        *overrides,
    ]
    import os

    from ray.job_submission import JobStatus

    from adept.ray_auth import TOKEN_ENV, jobs_client

    # The cluster's token (Ray clusters run with token auth): $RAY_AUTH_TOKEN, as `ray job submit` reads it.
    client = jobs_client(address, os.environ.get(TOKEN_ENV))
    job_id = client.submit_job(
        entrypoint=shlex.join(entry),
        runtime_env={"working_dir": str(root), "excludes": _EXCLUDES, "env_vars": env},
        metadata={"adept": "finetune", "config": str(rel)},
    )
    console.print(f"submitted [bold]{job_id}[/] to {address}")
    if not follow:
        return
    import asyncio

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            console.out(lines, end="", highlight=False)

    asyncio.run(tail())
    status = client.get_job_status(job_id)
    if status != JobStatus.SUCCEEDED:
        raise Unavailable(f"job {job_id} ended {status}: {client.get_job_info(job_id).message or ''}".strip())
    console.print(f"job {job_id} [green]succeeded[/]")
