"""``adept finetune``: a fine-tuning job of the platform (listed by the API and the console), trained
here; or a job submitted to a Ray cluster whose logs it follows. ``adept finetune list | show |
events | cancel`` read and cancel the tenant's jobs through the running platform's fine-tuning API
(``/v1/fine_tuning/jobs``: the job owner's list, retrieve, events and cancel, as the tenant the key
names; found as ``adept ask`` finds it, ``tools.cli.discovery``), or, with nothing running on the
data dir, through the same owner over its stores here.

Here, the job is the kernel's (``adept.finetuning.service.FineTuning.create_from_config``): the same
record, checks, limits and state machine as an API job. When the platform runs (``adept up``
holds the data dir's job runner) its runner trains it and this command follows it; otherwise this
command drives it itself, in the foreground, with the same runner and the local executor.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from adept.errors import ConfigError, InvalidRequest, Unavailable
from tools.cli.common import console, handle_errors, platform_config
from tools.cli.config_cmd import DataDirOption, SetOption


class _RunByDefault(TyperGroup):
    """``adept finetune --config job.yaml`` is ``adept finetune run --config job.yaml``: the sub-commands
    came after it, and scripts that train with it keep working."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_RunByDefault, no_args_is_help=True)

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


@app.command("run")
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
    if address is None and dry_run:
        import json

        from training.finetune import run_job

        console.print_json(json.dumps(run_job(cfg, address="auto", dry_run=True, platform=platform)))
        return
    if address is None:
        _train_here(cfg, platform)
        return
    env = _platform_env(data_dir, platform_overrides)
    _submit(
        config,
        overrides,
        address,
        follow=follow,
        dry_run=dry_run,
        env=env,
        entrypoint_num_cpus=platform.training_entrypoint_num_cpus,
    )


def _train_here(cfg: object, platform: object) -> None:
    """Create the job in the platform's store and see it through (here, or by the running platform's runner)."""
    import asyncio
    import time

    from adept.config.finetuning import FineTuningConfig
    from adept.errors import Unavailable as Busy
    from adept.finetuning.runner import JobRunner
    from adept.finetuning.service import open_fine_tuning
    from adept.platform import Platform

    settings = FineTuningConfig()
    owner = open_fine_tuning(Platform(platform), settings)
    ref = getattr(cfg, "evaluation_file", None)
    if ref and not ref.startswith("file-") and "://" not in ref and not Path(ref).is_absolute():
        # A path on this command line is this directory's, as the config file's own path is.
        cfg = cfg.model_copy(update={"evaluation_file": str(Path(ref).resolve())})  # type: ignore[attr-defined]
    record = asyncio.run(owner.create_from_config(cfg))  # type: ignore[arg-type]
    console.print(f"created fine-tuning job [bold]{record.id}[/] ({record.tenant}/{record.adapter})")
    runner = JobRunner(owner)
    try:
        runner.take_lock()  # one runner per data dir
        here = True
    except Busy:
        here = False  # `adept up` runs: its runner trains the job
        console.print("the running platform's job runner trains it; following")
    shown = 0
    try:
        while True:
            if here:
                runner.reconcile()
            record = owner.jobs.get(record.tenant, record.id)
            for h in record.history[shown:]:
                loss = f" train_loss {h.train_loss:.4f}" if h.train_loss is not None else ""
                console.print(f"step {h.step}/{h.total_steps or '?'}{loss}")
            shown = len(record.history)
            if not record.active:
                break
            time.sleep(settings.runner_poll_interval_s)
    except KeyboardInterrupt:
        if here:
            runner.stop()  # interrupted: the next `adept up` or `adept finetune` run resumes it
        raise
    finally:
        if here:
            runner.stop(interrupt_jobs=False)
    if record.status != "succeeded":
        reason = record.error.message if record.error else record.status
        raise Unavailable(f"fine-tuning job {record.id} {record.status}: {reason}")
    console.print(
        f"job {record.id} [green]succeeded[/]: {record.fine_tuned_model or 'result kept in its run dir'}"
    )


def _platform_env(data_dir: str | None, overrides: list[str] | None) -> dict[str, str]:
    """The platform settings given on this command line, as the ``ADEPT_*`` variables the job reads."""
    env = {"ADEPT_DATA_DIR": data_dir} if data_dir else {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        env["ADEPT_" + key.strip().upper().replace(".", "__")] = value
    return env


def _submit(
    config: Path,
    overrides: list[str],
    address: str,
    *,
    follow: bool,
    dry_run: bool,
    env: dict[str, str],
    entrypoint_num_cpus: float,
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
        # The driver reserves a CPU, as the operator's do: it runs on a worker, never on the training head
        # (`num-cpus: 0`), where the autoscaler's ServiceAccount token is (adept.placement counts it).
        entrypoint_num_cpus=entrypoint_num_cpus,
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


# -- the tenant's jobs, through the running platform's API -------------------------------------------
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Adept URL (default: $ADEPT_URL, else the platform running on the data dir)."),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key", help="Tenant key (default: $ADEPT_API_KEY, else the demo key in the data dir)."
    ),
]
DirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", help="Data dir of the platform (default: the nearest .adept, else ~/.adept)."),
]
JobArg = Annotated[str, typer.Argument(help="The job's id (ftjob-...), as `adept finetune list` shows it.")]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", help="How many to show (1-100), newest first.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]


_PATHS = {
    "list": ("GET", "/v1/fine_tuning/jobs"),
    "show": ("GET", "/v1/fine_tuning/jobs/{job}"),
    "events": ("GET", "/v1/fine_tuning/jobs/{job}/events"),
    "cancel": ("POST", "/v1/fine_tuning/jobs/{job}/cancel"),
}


def _jobs(
    op: str, url: str | None, api_key: str | None, data_dir: str | None, job: str = "", limit: int = 20
) -> Any:
    """One job operation as the tenant the key names, as the API answers it (its JSON).

    Through the fine-tuning API of the platform the CLI finds (``--url``, ``$ADEPT_URL``, the one
    ``adept up`` runs on the data dir); with none running, through the same job owner over the data
    dir's stores, here (as ``adept adapter`` and ``adept tenant`` do). Errors are the API's, one line.
    """
    import os

    from adept.admin_client import find_running
    from adept.errors import AuthenticationError
    from tools.cli.discovery import discover_api_key, discover_data_dir

    where = discover_data_dir(data_dir)
    key = discover_api_key(api_key, where)
    if not key:
        raise AuthenticationError(f"no API key: pass --api-key or set ADEPT_API_KEY (no demo.key in {where})")
    if url or os.environ.get("ADEPT_URL") or find_running(where) is not None:
        return _http(op, url, key, where, job, limit)
    return _local(op, key, where, job, limit)


def _http(op: str, url: str | None, key: str, where: Path, job: str, limit: int) -> Any:
    import httpx

    from adept.errors import error_from_http
    from tools.cli.discovery import discover_url

    base = discover_url(url, where)
    method, path = _PATHS[op]
    params = {"limit": limit} if op in ("list", "events") else None
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30.0) as c:
            r = c.request(method, path.format(job=_job_path(job)), params=params)
    except httpx.TransportError as e:
        raise Unavailable(
            f"cannot reach Adept at {base}: {e} (is `adept up` / `make run` running?)"
        ) from None
    if r.status_code >= 400:
        err = error_from_http(r.status_code, r.content)
        err.message = f"{err.message} (HTTP {r.status_code})"
        raise err
    return r.json()


def _local(op: str, key: str, where: Path, job: str, limit: int) -> Any:
    """The job owner over the data dir's stores, answering as the API would (nothing runs on it)."""
    import asyncio

    from adept.config.finetuning import FineTuningConfig
    from adept.finetuning.service import open_fine_tuning
    from adept.platform import Platform
    from services.gateway.finetuning import FineTuningService

    platform = Platform(platform_config(str(where)))
    try:
        tenant = platform.tenants.authenticate(key)
        api = FineTuningService(open_fine_tuning(platform, FineTuningConfig()))
        call = {
            "list": lambda: api.list_jobs(tenant, after=None, limit=limit),
            "show": lambda: api.get_job(tenant, job),
            "events": lambda: api.list_events(tenant, job, after=None, limit=limit),
            "cancel": lambda: api.cancel_job(tenant, job),
        }[op]
        return asyncio.run(call()).model_dump(mode="json")
    finally:
        platform.close()


def _limit(n: int) -> int:
    if not 1 <= n <= 100:
        raise InvalidRequest(f"--limit must be between 1 and 100, not {n}")
    return n


def _when(t: int | None) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M") if t else "-"


def _print_json(data: Any) -> None:
    import json

    console.print_json(json.dumps(data))


@app.command("list")
@handle_errors
def list_jobs(
    limit: LimitOpt = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
) -> None:
    """Your fine-tuning jobs, newest first: id, status, when created, the model it made (or trains)."""
    page = _jobs("list", url, api_key, data_dir, limit=_limit(limit))
    if as_json:
        _print_json(page)
        return
    if not page["data"]:
        console.print("no fine-tuning jobs")
        return
    for j in page["data"]:  # one line each, never cut: ids are for copying into show/events/cancel
        model = j.get("fine_tuned_model") or f"(from {j['model']})"
        console.print(
            f"{j['id']}  {j['status']:<16} {_when(j['created_at'])}  {model}", highlight=False, soft_wrap=True
        )


@app.command("show")
@handle_errors
def show(
    job: JobArg, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None
) -> None:
    """One job: status, hyper-parameters, files, the model it made, its error."""
    j = _jobs("show", url, api_key, data_dir, job=_job_id(job))
    if as_json:
        _print_json(j)
        return
    hp = j.get("hyperparameters") or {}
    lines = [
        f"[bold]{j['id']}[/]  {j['status']}",
        f"model            {j['model']}",
        f"fine-tuned model {j.get('fine_tuned_model') or '-'}",
        f"training file    {j['training_file']}"
        + (f" (validation {j['validation_file']})" if j.get("validation_file") else ""),
        f"hyperparameters  epochs {hp.get('n_epochs')}, batch {hp.get('batch_size')}, "
        f"lr x{hp.get('learning_rate_multiplier')}",
        f"created          {_when(j['created_at'])} UTC, finished {_when(j.get('finished_at'))}",
    ]
    if j.get("trained_tokens"):
        lines.append(f"trained tokens   {j['trained_tokens']}")
    if j.get("error"):
        lines.append(f"[red]error[/]            {j['error'].get('message')}")
    for line in lines:
        console.print(line, highlight=False)


@app.command("events")
@handle_errors
def events(
    job: JobArg,
    limit: LimitOpt = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
) -> None:
    """A job's events, oldest of the newest LIMIT first: steps with their losses, publishing, promotion."""
    page = _jobs("events", url, api_key, data_dir, job=_job_id(job), limit=_limit(limit))
    if as_json:
        _print_json(page)
        return
    for e in reversed(page["data"]):
        style = {"warn": "yellow", "error": "red"}.get(e["level"], "")
        text = f"{_when(e['created_at'])}  {e['message']}"
        console.print(f"[{style}]{text}[/]" if style else text, highlight=False, soft_wrap=True)


@app.command("cancel")
@handle_errors
def cancel(job: JobArg, url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None) -> None:
    """Cancel an unfinished job (its training stops; a finished job stays as it is: an error)."""
    j = _jobs("cancel", url, api_key, data_dir, job=_job_id(job))
    console.print(f"{j['id']} {j['status']}", highlight=False)


def _job_id(job: str) -> str:
    job = job.strip()
    if not job:
        raise InvalidRequest("name a job: adept finetune list shows their ids")
    return job


def _job_path(job: str) -> str:
    """The id as one path segment (the API answers "not found" for anything that is not a job of yours)."""
    from urllib.parse import quote

    return quote(job, safe="")
