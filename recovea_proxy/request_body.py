"""The request body: read whole and bounded, and parsed once when it is a JSON object.

The body is read only after the caller is authenticated (a refused caller costs no
body read); a body that stalls is cut off below, by the HTTP protocol
(`http_protocol`: 408, then `http.disconnect` here).
"""

from __future__ import annotations

from typing import Any

import orjson

from recovea_proxy.asgi import Receive
from recovea_proxy.errors import GatewayError
from recovea_proxy.headers import RequestHeaders


class ClientGone(Exception):
    """The client disconnected before the gateway could answer."""


async def read_body(receive: Receive, headers: RequestHeaders, limit: int) -> bytes:
    """The whole request body, at most `limit` bytes (413). A body that stalls is cut
    off by the HTTP protocol (`http_protocol`: 408, then `http.disconnect` here)."""
    if headers.content_length is not None and headers.content_length > limit:
        raise too_large(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def too_large(limit: int, what: str = "body") -> GatewayError:
    """413 `request_too_large` for a request `body` (or an `upload`) over `limit`."""
    noun = "Request body" if what == "body" else "Upload"
    return GatewayError(
        413, "request_too_large", f"{noun} is larger than {limit / (1024 * 1024):g} MB."
    )


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (it is forwarded as is)."""
    if body[:1] != b"{":
        stripped = body.lstrip()
        if stripped[:1] != b"{":
            return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
