"""Which data dir, platform URL and tenant key a CLI command uses when the user names none.

``make run`` keeps its state in ``<project>/.adept``; a second terminal anywhere inside the project
must find it without an environment variable. The order:

- data dir: ``--data-dir`` > ``$ADEPT_DATA_DIR`` > the nearest ``.adept`` holding an admin key in
  the current directory or one of its parents > ``~/.adept``;
- URL: ``--url`` > ``$ADEPT_URL`` > the URL the platform running on that data dir recorded >
  ``http://127.0.0.1:8000``;
- tenant key: ``--api-key`` > ``$ADEPT_API_KEY`` > the demo tenant's key in that data dir.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
PROJECT_DIR_NAME = ".adept"
# A directory is a data dir once `adept up` has run on it: it then holds the admin key.
_MARKER = "admin.key"


def project_data_dir(start: Path | None = None) -> Path | None:
    """The nearest ``.adept`` data dir in ``start`` (default: the working directory) or a parent."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / PROJECT_DIR_NAME
        if (candidate / _MARKER).is_file():
            return candidate
    return None


def discover_data_dir(explicit: str | Path | None = None, start: Path | None = None) -> Path:
    """The data dir a command acts on when ``explicit`` (``--data-dir``) may be None."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("ADEPT_DATA_DIR"):
        return Path(os.environ["ADEPT_DATA_DIR"]).expanduser()
    return project_data_dir(start) or Path.home() / PROJECT_DIR_NAME


def discover_url(explicit: str | None, data_dir: Path) -> str:
    """The platform URL: ``explicit`` > ``$ADEPT_URL`` > the one running on ``data_dir`` > the default."""
    from adept.admin_client import find_running

    if explicit or os.environ.get("ADEPT_URL"):
        return str(explicit or os.environ["ADEPT_URL"]).rstrip("/")
    running = find_running(data_dir)
    return (running.url if running else DEFAULT_URL).rstrip("/")


def discover_api_key(explicit: str | None, data_dir: Path) -> str | None:
    """The tenant key: ``explicit`` > ``$ADEPT_API_KEY`` > ``<data_dir>/demo.key`` (None if none)."""
    if explicit or os.environ.get("ADEPT_API_KEY"):
        return explicit or os.environ["ADEPT_API_KEY"]
    key_file = data_dir / "demo.key"
    try:
        return key_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
