"""``adept up`` runs the whole platform on this machine; ``adept ask`` streams an answer from it."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from tools.cli.common import console, err_console, handle_errors
from tools.cli.discovery import DEFAULT_URL

app = typer.Typer(no_args_is_help=True)


def _serving_config(config: Path | None, overrides: list[str]) -> Any:
    from adept.config.base import load_config
    from adept.config.serving import ServingConfig

    return load_config(ServingConfig, config, overrides)


def _use_local_gpu(cfg: Any) -> Any:
    """With ``--device auto`` on a machine with a GPU, give the LLM replica one (Ray hides GPUs otherwise)."""
    llm = cfg.deployments.llm
    if (
        cfg.platform.device == "auto"
        and llm.ray_actor_options.num_gpus == 0
        and cfg.platform.resolved_device() == "cuda"
    ):
        llm.ray_actor_options.num_gpus = 1
    return cfg


@app.command("up")
@handle_errors
def up(
    data_dir: Annotated[
        str | None,
        typer.Option("--data-dir", help="Where all state lives (default: $ADEPT_DATA_DIR or ~/.adept)."),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0: all interfaces).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8000,
    model: Annotated[
        str | None, typer.Option("--model", help="Base model: bundled:NAME, a directory or a cached hub id.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda [default: auto].")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Create tenant 'demo' with the sample knowledge base.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Serving config YAML (see README).", show_default=False),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a serving setting: key=value (repeatable)."),
    ] = None,
) -> None:
    """Start local Ray, Milvus Lite and the Serve application; Ctrl-C stops everything."""
    from services.embedded import start_platform

    # Only options given on the command line override the config file and ADEPT_* variables.
    given = {
        "platform.data_dir": data_dir,
        "gateway.host": host,
        "gateway.port": port,
        "platform.model": model,
    }
    given["platform.device"] = device
    ov = [f"{k}={v}" for k, v in given.items() if v is not None]
    if device == "cuda" and not any("num_gpus" in o for o in overrides or []):
        ov.append("deployments.llm.ray_actor_options.num_gpus=1")  # Ray hides GPUs from replicas without one
    cfg = _use_local_gpu(_serving_config(config, [*ov, *(overrides or [])]))

    def stop_on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds into the finally below, from wherever the main thread is

    signal.signal(signal.SIGTERM, stop_on_signal)
    err_console.print(f"[dim]data dir: {cfg.platform.data_dir}[/]", highlight=False, soft_wrap=True)
    platform = None
    try:
        from tools.eval.promotion import serve_evaluator
        from tools.eval.serve_app import build_app

        platform = start_platform(
            cfg,
            demo=demo,
            say=lambda m: err_console.print(f"[dim]{m}[/]", highlight=False, soft_wrap=True),
            evaluator=serve_evaluator,  # eval-gated promotion measures with the model that serves
            build_app=build_app,  # the chart's application: the admin evaluate route answers here too
        )
        # ray.init installed its own SIGTERM handler (a crash dump, no cleanup): take SIGTERM back.
        signal.signal(signal.SIGTERM, stop_on_signal)
        _print_banner(platform)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        err_console.print("stopping ...")
    finally:
        if platform is not None:
            platform.stop()
    err_console.print("stopped.")


def _print_banner(p: Any) -> None:
    admin = "$" + p.admin_key_source[4:] if p.admin_key_source.startswith("env:") else p.admin_key_source
    console.print(
        f"\n[bold green]Adept is up[/] at [bold]{p.url}[/]  (OpenAI-compatible: {p.url}/v1)", highlight=False
    )
    console.print(f"admin key: {admin}   (admin API: {p.url}/admin/...)", highlight=False, soft_wrap=True)
    console.print(
        f"Ray: token auth (token: {p.ray_token_file}); GCS, raylet and agents on loopback",
        highlight=False,
        soft_wrap=True,
    )
    key = "$ADEPT_API_KEY"
    if p.demo_key:
        console.print(
            f"demo tenant key: {p.demo_key}   (also in {p.demo_key_file})", highlight=False, soft_wrap=True
        )
        key = p.demo_key
    else:
        console.print(
            f'create a tenant: curl -s -X POST {p.url}/admin/tenants -H "Authorization: Bearer $(cat {admin})" '
            "-H 'Content-Type: application/json' -d '{\"name\": \"acme\"}'",
            highlight=False,
            soft_wrap=True,
        )
    from services.gateway.context import base_model_names

    model = base_model_names(p.config.platform.model)[0]
    if p.demo_key:
        _show_demo(p, model)
    else:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
        console.print("\ntry it:", highlight=False, soft_wrap=True)
        console.print(
            f"curl -s {p.url}/v1/chat/completions -H 'Authorization: Bearer {key}' "
            f"-H 'Content-Type: application/json' -d '{body}'",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        "\nCtrl-C stops the platform; your data stays in the data dir.", highlight=False, soft_wrap=True
    )


def _show_demo(p: Any, model: str) -> None:
    """One demo question answered with its sources, the commands to ask more, and the demo fine-tune."""
    import threading

    from adept.admin_client import PlatformHTTP
    from adept.errors import AdeptError
    from tools.cli.demo import ask_demo_question, ask_more_commands, start_demo_finetune

    with PlatformHTTP(p.url, p.demo_key) as client:
        try:
            shown = ask_demo_question(client, model)
        except AdeptError as e:
            err_console.print(
                f"[yellow]the demo question could not be answered:[/] {e.message}", highlight=False
            )
        else:
            console.print(f"\n[bold]Q:[/] {shown.question}", highlight=False, soft_wrap=True)
            console.print("[bold]A:[/] ", end="", highlight=False)
            console.print(shown.answer, highlight=False, soft_wrap=True, markup=False)
            for i, c in enumerate(shown.sources, 1):
                console.print(
                    f"   [{i}] {c.get('title')}  ({c.get('document_id')})", highlight=False, markup=False
                )
        console.print("\n[bold]ask more[/] (the demo tenant's documents, with sources):", highlight=False)
        for how, command in ask_more_commands(p.url, p.demo_key, model):
            console.print(f"  {how}:", highlight=False)
            # Not indented: a heredoc's closing EOF must start its line to work when pasted.
            console.print(command, highlight=False, soft_wrap=True, markup=False)
        if not p.config.finetuning.enabled:
            return
        try:
            job = start_demo_finetune(client, model)
        except AdeptError as e:
            err_console.print(
                f"[yellow]the demo fine-tuning job did not start:[/] {e.message}", highlight=False
            )
            return
    if job is None:
        console.print(
            "\nthe demo tenant's fine-tuning job ran before: `adept eval` compares all four routes",
            highlight=False,
        )
        return
    console.print(
        f"\nfine-tuning the demo adapter in the background (job {job['id']}, through the tenant's "
        f"/v1/fine_tuning/jobs): follow it with\n  curl -s {p.url}/v1/fine_tuning/jobs/{job['id']}/events "
        f"-H 'Authorization: Bearer {p.demo_key}'\nwhen it succeeds, `make eval` compares all four routes.",
        highlight=False,
        soft_wrap=True,
    )
    threading.Thread(
        target=_follow_job, args=(p.url, p.demo_key, job["id"]), name="demo-finetune", daemon=True
    ).start()


def _follow_job(url: str, key: str, job_id: str, interval_s: float = 10.0) -> None:
    """Print the demo job's new events on the console until it ends (the public events API)."""
    import time

    from adept.admin_client import PlatformHTTP
    from adept.errors import AdeptError

    seen: set[str] = set()
    with PlatformHTTP(url, key) as client:
        while True:
            try:
                events = client.call("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100})
                job = client.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
            except AdeptError:
                return  # the platform is stopping
            for ev in reversed(events.get("data", [])):  # newest first on the wire
                if ev.get("id") not in seen:
                    seen.add(ev.get("id"))
                    err_console.print(
                        f"fine-tune {job_id}: {ev.get('message')}", style="dim", markup=False, highlight=False
                    )
            if job.get("status") in ("succeeded", "failed", "cancelled"):
                model = job.get("fine_tuned_model")
                err_console.print(
                    f"fine-tune {job_id} {job.get('status')}"
                    + (f": ask it with adept ask -a {model} ..." if model else ""),
                    highlight=False,
                )
                return
            time.sleep(interval_s)


def _error_from(status: int, body: bytes) -> Any:
    from adept.errors import error_from_http

    err = error_from_http(status, body)
    err.message = f"{err.message} (HTTP {status})"
    return err


@app.command("ask")
@handle_errors
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    adapter: Annotated[
        str | None, typer.Option("--adapter", "-a", help="One of your adapters: name[@vN].")
    ] = None,
    rag: Annotated[
        bool | None,
        typer.Option(
            "--rag/--no-rag",
            help="Answer from your knowledge base, with citations [default: on when it has documents].",
            show_default=False,
        ),
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Passages to retrieve with RAG.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Most tokens to generate.")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.")] = 0.0,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Adept URL (default: $ADEPT_URL, else the platform running on the data dir, "
            f"else {DEFAULT_URL}).",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", help="Tenant key (default: $ADEPT_API_KEY, else the demo key in the data dir)."
        ),
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir",
            help="Data dir of the platform (default: $ADEPT_DATA_DIR, else the nearest .adept of this "
            "project, else ~/.adept).",
        ),
    ] = None,
) -> None:
    """Stream an answer in the terminal, then list the citations."""
    import httpx

    from adept.errors import AuthenticationError
    from tools.cli.discovery import discover_api_key, discover_data_dir, discover_url

    where = discover_data_dir(data_dir)
    base = discover_url(url, where)
    key = discover_api_key(api_key, where)
    if not key:
        raise AuthenticationError(f"no API key: pass --api-key or set ADEPT_API_KEY (no demo.key in {where})")
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(30.0, read=600.0)) as client:
        try:
            model = adapter or _base_model(client)
            use_rag = _has_documents(client) if rag is None else rag
            body: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": question}],
                "stream": True,
                "temperature": temperature,
            }
            if max_tokens:
                body["max_tokens"] = max_tokens
            if use_rag:
                body["rag"] = {"top_k": top_k} if top_k else True
            citations = _stream(client, body)
        except httpx.TransportError as e:
            from adept.errors import Unavailable

            raise Unavailable(
                f"cannot reach Adept at {base}: {e} (is `adept up` / `make run` running?)"
            ) from None
    if citations:
        console.print("\n[bold]Sources[/]", highlight=False, soft_wrap=True)
        for i, c in enumerate(citations, 1):
            console.print(
                f"  [{i}] {c['title']}  ({c['document_id']}, {c['chunk_id']}, score {c['score']:.3f})",
                highlight=False,
            )
    elif not use_rag:
        err_console.print("[dim](without your documents: --rag answers from them)[/]", highlight=False)


def _has_documents(client: Any) -> bool:
    """Whether the tenant's knowledge base holds any document (RAG is then the default)."""
    r = client.get("/v1/kb/documents")
    if r.status_code == 404:
        return False  # a server without a knowledge base
    if r.status_code != 200:
        raise _error_from(r.status_code, r.content)
    return bool(r.json().get("documents"))


def _base_model(client: Any) -> str:
    r = client.get("/v1/models")
    if r.status_code != 200:
        raise _error_from(r.status_code, r.content)
    return r.json()["data"][0]["id"]


def _stream(client: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    citations: list[dict[str, Any]] = []
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise _error_from(r.status_code, r.read())
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise _error_from(503, data.encode())
            for choice in event.get("choices", []):
                text = choice.get("delta", {}).get("content")
                if text:
                    console.print(text, end="", highlight=False, markup=False, soft_wrap=True)
            citations = event.get("citations", citations)
    console.print()
    return citations
