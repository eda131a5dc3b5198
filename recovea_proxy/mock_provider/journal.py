"""What the mock received: a bounded journal of requests, its introspection routes
(`GET`/`DELETE /_mock/requests`) and the echo route that mirrors a request back.

Every request except the introspection calls is journalled, oldest first, the last
200 kept: method, path (decoded; `raw_path` as sent, with its query), query,
lowercased headers, the body parsed as JSON (null when it is not JSON) and the
body's length. A request answered with a stream also gets
`stream`: the events written so far and how the stream ended —

| `end`           | when |
| `streaming`     | events are still being written |
| `completed`     | every event was written and the stream closed normally |
| `client_closed` | the client closed the connection (or stopped waiting) before the end |
| `reset`         | the mock cut the connection itself (`x-mock-fault: reset-mid-stream`) |

A WebSocket session gets `ws` instead (see `realtime`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

import orjson
from aiohttp import web

JOURNAL_SIZE = 200
JOURNAL_KEY: web.AppKey[deque[dict[str, Any]]] = web.AppKey("mock_journal")
_ENTRY_KEY: web.RequestKey[dict[str, Any]] = web.RequestKey("mock_journal_entry")
_JSON = "application/json"


def new_journal() -> deque[dict[str, Any]]:
    return deque(maxlen=JOURNAL_SIZE)


def _headers(request: web.Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


def record(request: web.Request, raw: bytes, body: Any) -> None:
    """Journal one request; `body` is its parsed JSON, or None."""
    entry = {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query": request.query_string,
        "headers": _headers(request),
        "body": body,
        "body_bytes": len(raw),
    }
    request.app[JOURNAL_KEY].append(entry)
    request[_ENTRY_KEY] = entry


def entry_of(request: web.Request) -> dict[str, Any]:
    """The journal entry `record` made for this request (to add what was learnt since)."""
    return request[_ENTRY_KEY]


def stream_state(request: web.Request) -> dict[str, Any]:
    """The journal's record of this request's stream (`events`, `end`), for the sender
    to update as it writes."""
    state: dict[str, Any] = {"events": 0, "end": "streaming"}
    entry = request.get(_ENTRY_KEY)
    if entry is not None:
        entry["stream"] = state
    return state


def ws_state(request: web.Request) -> dict[str, Any]:
    """The journal's record of this request's WebSocket session (`ws`), for the
    session to update as it runs."""
    state: dict[str, Any] = {"received": [], "binary": 0, "binary_bytes": 0, "close_code": None}
    entry = request.get(_ENTRY_KEY)
    if entry is not None:
        entry["ws"] = state
    return state


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or None when it is empty or not JSON."""
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


async def list_requests(request: web.Request) -> web.Response:
    """`GET /_mock/requests`: the journal, oldest first."""
    entries: deque[dict[str, Any]] = request.app[JOURNAL_KEY]
    try:
        return web.Response(body=orjson.dumps([*entries]), content_type=_JSON)
    except orjson.JSONEncodeError:  # a body nested deeper than orjson writes
        return web.Response(body=orjson.dumps([_writable(e) for e in entries]), content_type=_JSON)


def _writable(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry, each of its body's fields that orjson cannot write back (too deep)
    replaced by a note."""
    body = entry["body"]
    if not _writes(body):
        if isinstance(body, dict):
            body = {name: value if _writes(value) else _TOO_DEEP for name, value in body.items()}
        else:
            body = _TOO_DEEP
    return {**entry, "body": body}


_TOO_DEEP = "<JSON nested too deep to write>"


def _writes(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


async def clear_requests(request: web.Request) -> web.Response:
    """`DELETE /_mock/requests`: empty the journal."""
    request.app[JOURNAL_KEY].clear()
    return web.Response(status=204)


async def echo(request: web.Request) -> web.Response:
    """`ANY …/_mock/echo`: what arrived — method, path, query, headers, body digest."""
    raw = await request.read()
    record(request, raw, parse_json(raw))
    doc = {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query": request.query_string,
        "headers": _headers(request),
        "body_sha256": hashlib.sha256(raw).hexdigest(),
    }
    return web.Response(
        body=orjson.dumps(doc), content_type=_JSON, headers={"x-request-id": "req_echo"}
    )
