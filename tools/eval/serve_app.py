"""The Serve application with eval-gated promotion's measuring: ``services.app.build_app`` plus the
evaluator, which the layer below cannot import (``tools.eval`` scores; ``services`` serves).

The chart's RayService names this builder (``import_path: tools.eval.serve_app:build_app``), so the
gateway answers ``POST /admin/tenants/{name}/evaluate`` — what the operator's job owner measures a
FineTuneJob's new adapter version and the active one with (``operators.handlers``), through the
tenant's own completion path and the model that serves.
"""

from __future__ import annotations

from typing import Any

from tools.eval.promotion import completion_evaluator


def build_app(args: Any = None) -> Any:
    from services.app import build_app as build

    return build(args, evaluator=completion_evaluator)
