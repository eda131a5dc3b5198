"""The mock provider's aiohttp app: routes, auth, faults and the request journal."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from recovea_proxy.mock_provider import anthropic_wire, openai_wire
from recovea_proxy.mock_provider.controls import MockDefaults, Plan, plan_for

DEFAULTS_KEY = web.AppKey("defaults", MockDefaults)
JOURNAL_KEY: web.AppKey[deque[dict[str, Any]]] = web.AppKey("journal")
_LONG_WAIT_S = 600.0
_JSON = "application/json"
_SSE = "text/event-stream; charset=utf-8"


class _Request:
    """One parsed mock request: surface, body and plan."""

    __slots__ = ("body", "plan", "raw", "surface")

    def __init__(self, surface: str, raw: bytes, body: dict[str, Any], plan: Plan) -> None:
        self.surface = surface
        self.raw = raw
        self.body = body
        self.plan = plan

    @property
    def request_id(self) -> str:
        return "req_" + self.plan.digest[24:48]


def _provider_headers(req: _Request) -> dict[str, str]:
    if req.surface == "anthropic":
        return {"request-id": req.request_id, "anthropic-organization-id": "org-mock"}
    headers = {"x-request-id": req.request_id, "openai-processing-ms": "1"}
    if req.surface == "openrouter":
        headers["x-generation-id"] = "gen-" + req.plan.digest[:20]
    return headers


def _error(
    req: _Request, status: int, message: str, kind: str, code: str | None = None
) -> web.Response:
    if req.surface == "anthropic":
        body = anthropic_wire.error_json(kind, message, req.request_id)
    else:
        body = openai_wire.error_json(status, message, kind, code)
    headers = _provider_headers(req)
    if status == 429:
        headers["retry-after"] = "0"
    return web.Response(body=body, status=status, content_type=_JSON, headers=headers)


async def _parse(request: web.Request, surface: str) -> _Request | web.Response:
    raw = await request.read()
    _journal(request, raw)
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = None
    plan = plan_for(request.app[DEFAULTS_KEY], request.headers, _identity(raw, body))
    empty = _Request(surface, raw, {}, plan)
    auth = request.headers.get("authorization", "")
    if not (auth.lower().startswith("bearer ") and auth[7:].strip()) and not request.headers.get(
        "x-api-key"
    ):
        kind = "authentication_error" if surface == "anthropic" else "invalid_request_error"
        return _error(empty, 401, "No API key provided.", kind, "invalid_api_key")
    if not isinstance(body, dict):
        return _error(empty, 400, "Body must be a JSON object.", "invalid_request_error")
    return _Request(surface, raw, body, plan)


def _identity(raw: bytes, body: Any) -> bytes:
    """What ids derive from: the body without `stream_options`, which only shapes the
    stream's usage (so a gateway that adds it gets the same ids as a direct call)."""
    if isinstance(body, dict):
        rest = {k: v for k, v in body.items() if k != "stream_options"}
        return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)
    return raw


async def _apply_fault(request: web.Request, req: _Request) -> web.Response | None:
    fault = req.plan.fault
    if req.plan.shape.first_byte_delay_ms:
        await asyncio.sleep(req.plan.shape.first_byte_delay_ms / 1000)
    if fault == "500":
        kind = "api_error" if req.surface == "anthropic" else "server_error"
        return _error(req, 500, "The mock failed on purpose.", kind)
    if fault == "429":
        return _error(req, 429, "Rate limited by the mock.", "rate_limit_error")
    if fault == "529":
        return _error(req, 529, "Overloaded", "overloaded_error")
    if fault == "reset":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # no response at all
    if fault == "hang":
        await asyncio.sleep(_LONG_WAIT_S)
    return None


async def _json(request: web.Request, req: _Request, body: bytes) -> web.Response:
    headers = _provider_headers(req)
    if req.plan.fault == "gzip" and "gzip" in request.headers.get("accept-encoding", ""):
        headers["content-encoding"] = "gzip"
        body = gzip.compress(body)
    return web.Response(body=body, content_type=_JSON, headers=headers)


async def _stream(
    request: web.Request, req: _Request, events: Iterable[bytes]
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": _SSE, **_provider_headers(req)})
    await response.prepare(request)
    delay = req.plan.shape.chunk_delay_ms / 1000
    fault = req.plan.fault
    if req.surface == "openrouter":
        await response.write(b": OPENROUTER PROCESSING\n\n")
    for index, event in enumerate(events):
        if index and delay:
            await asyncio.sleep(delay)
        if fault == "reset-mid-stream" and index == 3:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if fault == "stall-mid-stream" and index == 2:
            await asyncio.sleep(_LONG_WAIT_S)
        if fault == "error-event" and index == 2:
            await response.write(
                anthropic_wire.MID_STREAM_ERROR
                if req.surface == "anthropic"
                else openai_wire.MID_STREAM_ERROR
            )
            break
        await response.write(event)
    await response.write_eof()
    return response


def _openai_handler(kind: str, surface: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        parsed = await _parse(request, surface)
        if isinstance(parsed, web.Response):
            return parsed
        req = parsed
        if not isinstance(req.body.get("model"), str):
            return _error(req, 400, "you must provide a model parameter", "invalid_request_error")
        faulted = await _apply_fault(request, req)
        if faulted is not None:
            return faulted
        stream = req.body.get("stream") is True
        openrouter = surface == "openrouter"
        if kind in ("chat", "completions"):
            legacy = kind == "completions"
            if stream:
                return await _stream(
                    request,
                    req,
                    openai_wire.chat_events(
                        req.body, req.plan, legacy=legacy, openrouter=openrouter
                    ),
                )
            body = openai_wire.chat_json(req.body, req.plan, legacy=legacy, openrouter=openrouter)
        elif kind == "responses":
            if stream:
                return await _stream(request, req, openai_wire.responses_events(req.body, req.plan))
            body = openai_wire.responses_json(req.body, req.plan)
        else:
            body = openai_wire.embeddings_json(req.body, req.plan)
        return await _json(request, req, body)

    return handler


def _anthropic_handler(count_tokens: bool) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        parsed = await _parse(request, "anthropic")
        if isinstance(parsed, web.Response):
            return parsed
        req = parsed
        if not isinstance(req.body.get("model"), str):
            return _error(req, 400, "model: Field required", "invalid_request_error")
        faulted = await _apply_fault(request, req)
        if faulted is not None:
            return faulted
        if count_tokens:
            return await _json(request, req, anthropic_wire.count_tokens_json(req.plan))
        if req.body.get("stream") is True:
            return await _stream(request, req, anthropic_wire.message_events(req.body, req.plan))
        return await _json(request, req, anthropic_wire.message_json(req.body, req.plan))

    return handler


async def _models(request: web.Request) -> web.Response:
    _journal(request, b"")
    model = request.match_info.get("model")
    body = orjson.dumps(openai_wire.model_json(model)) if model else openai_wire.models_json()
    return web.Response(body=body, content_type=_JSON, headers={"x-request-id": "req_models"})


async def _echo(request: web.Request) -> web.Response:
    raw = await request.read()
    _journal(request, raw)
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_sha256": hashlib.sha256(raw).hexdigest(),
        },
        headers={"x-request-id": "req_echo"},
    )


def _journal(request: web.Request, raw: bytes) -> None:
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    request.app[JOURNAL_KEY].append(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
            "body_bytes": len(raw),
        }
    )


async def _journal_list(request: web.Request) -> web.Response:
    journal = request.app[JOURNAL_KEY]
    return web.Response(body=orjson.dumps([*journal]), content_type=_JSON)


async def _journal_clear(request: web.Request) -> web.Response:
    request.app[JOURNAL_KEY].clear()
    return web.Response(status=204)


def create_mock_app(defaults: MockDefaults | None = None) -> web.Application:
    """The mock provider (OpenAI under /v1, Anthropic /v1/messages, OpenRouter /api/v1)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[DEFAULTS_KEY] = defaults or MockDefaults()
    app[JOURNAL_KEY] = deque(maxlen=200)
    routes = app.router
    for prefix, surface in (("/v1", "openai"), ("/api/v1", "openrouter")):
        routes.add_post(f"{prefix}/chat/completions", _openai_handler("chat", surface))
        routes.add_post(f"{prefix}/completions", _openai_handler("completions", surface))
        routes.add_post(f"{prefix}/embeddings", _openai_handler("embeddings", surface))
        routes.add_post(f"{prefix}/responses", _openai_handler("responses", surface))
        routes.add_get(f"{prefix}/models", _models)
        routes.add_get(f"{prefix}/models/{{model}}", _models)
        routes.add_route("*", f"{prefix}/_mock/echo", _echo)
    routes.add_post("/v1/messages", _anthropic_handler(count_tokens=False))
    routes.add_post("/v1/messages/count_tokens", _anthropic_handler(count_tokens=True))
    routes.add_get("/_mock/requests", _journal_list)
    routes.add_delete("/_mock/requests", _journal_clear)
    return app
