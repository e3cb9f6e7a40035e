"""The ``adept`` command line. Sub-commands live one module per area; heavy imports stay inside commands."""

from __future__ import annotations

import importlib

import typer

from adept import __version__

app = typer.Typer(
    name="adept",
    help="Adept: make a small open LLM an expert in one industry, for many tenants.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, name or None to merge its commands into the top level, help)
_AREAS = [
    ("tools.cli.config_cmd", "config", "Show and validate configuration."),
    ("tools.cli.models_cmd", "models", "Prepare and list base models."),
    ("tools.cli.tenant_cmd", "tenant", "Create, list and delete tenants (embedded store)."),
    ("tools.cli.adapter_cmd", "adapter", "List, publish and delete adapters (embedded registry)."),
    ("tools.cli.kb_cmd", "kb", "Ingest, search, list and delete knowledge-base documents."),
    ("tools.cli.finetune_cmd", "finetune", "Fine-tune an adapter; list, show, follow and cancel your jobs."),
    ("tools.cli.serve_cmd", None, "Run the platform and ask it questions."),
    ("tools.cli.eval_cmd", None, "Compare routes on a question set."),
]


def register(target: typer.Typer, areas: list[tuple[str, str | None, str]]) -> None:
    """Add each area's commands to ``target``.

    Every area is part of the install: a module that cannot be imported is a broken install and
    fails here, loudly, rather than leaving its commands silently absent from ``--help``.
    """
    for module, name, help_text in areas:
        sub = importlib.import_module(module).app
        if name is None:
            for cmd in sub.registered_commands:
                target.registered_commands.append(cmd)
        else:
            target.add_typer(sub, name=name, help=help_text)


@app.command()
def version() -> None:
    """Print the Adept version."""
    typer.echo(f"adept {__version__}")


register(app, _AREAS)


def main() -> None:
    app()
