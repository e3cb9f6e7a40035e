"""What every CLI command shares: one-line errors with the right exit code, the rich console."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from adept.errors import AdeptError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(err: AdeptError | str, exit_code: int = 1) -> NoReturn:
    """Print one red line on stderr and exit non-zero."""
    if isinstance(err, AdeptError):
        message, exit_code = err.message, err.exit_code
    else:
        message = err
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code)


def handle_errors(fn: F) -> F:
    """Turn ``AdeptError`` (and a few expected OS errors) into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AdeptError as e:
            fail(e)
        except FileNotFoundError as e:
            fail(f"file not found: {e.filename or e}", 2)
        except PermissionError as e:
            fail(f"permission denied: {e.filename or e}", 8)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def platform_config(data_dir: str | None = None, overrides: list[str] | None = None):
    """The effective ``PlatformConfig``: defaults < ``ADEPT_*`` env < ``--data-dir`` < ``key=value``.

    With no data dir named anywhere, the nearest project ``.adept`` (the one ``make run`` uses) is
    found from the working directory (``tools.cli.discovery``).
    """
    import os

    from adept.config.platform import load_platform_config
    from tools.cli.discovery import project_data_dir

    if not data_dir and not os.environ.get("ADEPT_DATA_DIR") and not os.environ.get("ADEPT_CONFIG"):
        found = project_data_dir()
        data_dir = str(found) if found else None
    return load_platform_config(data_dir, overrides)
