"""Read upload bodies with a size cap and split ``multipart/form-data`` into files.

Stdlib only: the body is read once, capped while streaming (a 200 MB upload is refused after
the first ``max_request_bytes``, not buffered whole), then split on the boundary.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import unquote

from adept.errors import InvalidRequest, PayloadTooLarge

_PARAM_RE = re.compile(r';\s*([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


async def read_capped(stream: AsyncIterator[bytes], content_length: str | None, cap: int) -> bytes:
    """The whole body, or ``PayloadTooLarge`` as soon as it passes ``cap`` bytes."""
    if content_length and content_length.isdigit() and int(content_length) > cap:
        raise PayloadTooLarge(f"request body is {int(content_length)} bytes; the limit is {cap} bytes")
    body = bytearray()
    async for piece in stream:
        body += piece
        if len(body) > cap:
            raise PayloadTooLarge(f"request body exceeds the limit of {cap} bytes")
    return bytes(body)


def header_params(value: str) -> dict[str, str]:
    """Parameters of a header like ``form-data; name="file"; filename="a.md"`` (RFC 5987 ``filename*`` too)."""
    params: dict[str, str] = {}
    for key, raw in _PARAM_RE.findall(value):
        raw = raw.strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        key = key.lower()
        if key.endswith("*"):
            charset, _, rest = raw.partition("''")
            params[key[:-1]] = unquote(rest or raw, encoding=charset or "utf-8", errors="replace")
        else:
            params.setdefault(key, raw)
    return params


def split_multipart(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]]:
    """``[(field name, filename or None, data)]`` of a ``multipart/form-data`` body."""
    boundary = header_params(content_type).get("boundary")
    if not boundary:
        raise InvalidRequest("multipart body without a boundary in its Content-Type")
    delimiter = b"--" + boundary.encode("latin-1")
    parts = body.split(delimiter)
    if len(parts) < 3:
        raise InvalidRequest("malformed multipart body: no parts found")
    out = []
    for part in parts[1:-1]:  # parts[0] is the preamble, parts[-1] the "--" epilogue
        part = part.removeprefix(b"\r\n")
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            raise InvalidRequest("malformed multipart body: a part has no header/body separator")
        headers = {}
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        params = header_params(headers.get("content-disposition", ""))
        out.append((params.get("name", ""), params.get("filename"), data.removesuffix(b"\r\n")))
    return out
