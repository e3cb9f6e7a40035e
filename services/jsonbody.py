"""Decoding JSON request bodies the same way on every route: anything malformed is a 400, never a 500."""

from __future__ import annotations

import json
from typing import Any

from adept.errors import InvalidRequest


def decode_json_body(body: bytes | str) -> Any:
    """Parse a request body as JSON text.

    ``json.loads`` accepts what no handler can use: lone UTF-16 surrogates (``"\\ud800"``) decode
    into ``str`` values that fail later when encoded (tokenizers, Milvus, logs), and deep nesting
    raises ``RecursionError`` rather than ``ValueError``. Both are refused here, up front.

    Raises:
        InvalidRequest: the body is not UTF-8 JSON text.
    """
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be encoded
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    except UnicodeError:
        raise InvalidRequest("request body is not valid UTF-8 text (lone surrogate or bad bytes)") from None
    except ValueError as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}") from None
    return data
