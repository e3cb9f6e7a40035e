"""The web console: static pages at ``/ui`` and the few read-only JSON routes they need.

The gateway calls ``mount_console(app, ctx)`` when this package is present
(``services.gateway.http_app.CONSOLE_MODULE``); nothing else wires it in.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def mount_console(app: FastAPI, ctx: Any) -> None:
    """Add the console's pages (``/ui``) and its JSON routes (``/v1/adapters``, ``/v1/usage``, ``/admin/...``)."""
    from services.console.api import build_console_api_router
    from services.console.router import build_console_router

    app.include_router(build_console_router())
    app.include_router(build_console_api_router(ctx))
