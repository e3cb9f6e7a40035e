"""Base classes and loading for every configuration in Adept.

Strict on input (``extra="forbid"``: a typo is an error naming the field), tolerant on
stored data (unknown keys are dropped with a warning, so an older Adept reads a newer
manifest). Loading reports *all* problems at once, with the field path and the bad value.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from adept.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """User input: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


class StoredModel(BaseModel):
    """Stored data (manifests, records): unknown keys are ignored with a warning."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _warn_unknown(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = sorted(str(k) for k in data if k not in known)
            if unknown:
                warnings.warn(
                    f"{cls.__name__}: ignoring unknown keys {unknown} (written by a newer Adept?)",
                    UserWarning,
                    stacklevel=2,
                )
        return data


def format_validation_error(err: ValidationError) -> list[str]:
    """One readable line per problem: ``path.to.field: message (got 'value')``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `adept config show` for the valid fields)"
        got = e.get("input")
        suffix = ""
        if e["type"] != "missing" and not isinstance(got, Mapping | list) and got is not None:
            suffix = f" (got {got!r})"
        lines.append(f"{loc}: {msg}{suffix}")
    return lines


def validate(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """Validate ``data`` as ``cls`` or raise one ``ConfigError`` listing every problem."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = format_validation_error(err)
        raise ConfigError(
            f"{source} is invalid ({len(lines)} problem{'s' * (len(lines) != 1)}):", lines
        ) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping document is a ``ConfigError``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "lora.rank", 8)`` sets ``d["lora"]["rank"] = 8``, creating mappings."""
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply torchtune-style ``key.sub=value`` overrides; values are parsed as YAML scalars."""
    bad = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            bad.append(f"override {item!r}: expected key=value")
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        set_dotted(data, key.strip(), value)
    if bad:
        raise ConfigError("bad overrides:", bad)
    return data


def env_overrides(
    cls: type[BaseModel], prefix: str = "ADEPT_", environ: Mapping[str, str] | None = None
) -> dict:
    """Environment overrides for ``cls``'s fields: ``ADEPT_DEVICE=cuda``, ``ADEPT_SERVING__LLM__REPLICAS=2``.

    Only variables naming a real top-level field are used, so unrelated ``ADEPT_*`` variables
    (``ADEPT_URL``, ``ADEPT_API_KEY``) never collide.
    """
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    fields = set(cls.model_fields)
    for name, raw in env.items():
        if not name.startswith(prefix):
            continue
        path = name[len(prefix) :].lower().split("__")
        if path[0] not in fields:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        set_dotted(out, ".".join(path), value)
    return out


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``extra`` into a copy of ``base``."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    env: bool = True,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from (in increasing priority) ``base``, a YAML file, ``ADEPT_*`` env, ``overrides``."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    if env:
        data = deep_merge(data, env_overrides(cls))
    data = apply_overrides(data, overrides)
    return validate(cls, data, source=str(path) if path else cls.__name__)
