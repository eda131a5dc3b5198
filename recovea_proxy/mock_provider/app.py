"""The mock provider's aiohttp application: its routes and the steps every API request
goes through — journal, credentials, body, model, first-byte delay, faults, render.

One server answers for three providers whose paths do not clash:

    OpenAI      /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses,
                /v1/models[/{model}], /v1/images/generations,
                /v1/audio/transcriptions (multipart; `media_wire`), /v1/files (`files`);
                WebSockets: GET /v1/realtime, GET /v1/responses
    Anthropic   /v1/messages, /v1/messages/count_tokens, /v1/messages/batches, /v1/files
                (/v1/models and /v1/files answer in Anthropic's shape to requests with
                anthropic-version)
    OpenRouter  /api/v1/... as OpenAI, plus usage always, cost, X-Generation-Id and
                a keep-alive comment at the start of each stream
    Reports     the admin usage and cost reports of OpenAI and Anthropic, made of what
                was served (`usage_reports`, `usage_book`)

Anything else is a 404 in the shape of the provider the path or headers point at.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from recovea_proxy.mock_provider import (
    anthropic_wire,
    files,
    journal,
    media_wire,
    openai_wire,
    realtime,
    responses_wire,
    usage_reports,
)
from recovea_proxy.mock_provider.controls import MockDefaults, Plan, identity, plan_for
from recovea_proxy.mock_provider.delivery import abort, idle, json_response, stream_response
from recovea_proxy.mock_provider.errors import (
    ANTHROPIC_STREAM_ERROR,
    OPENAI_STREAM_ERROR,
    OPENROUTER_STREAM_ERROR,
    Failure,
    Surface,
    error_body,
    has_key,
    responses_stream_error,
)
from recovea_proxy.mock_provider.usage_book import record_served

DEFAULTS_KEY = web.AppKey("mock_defaults", MockDefaults)
OPENROUTER_KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
_MAX_BODY = 64 * 1024 * 1024
_ANTHROPIC_ORG = "5b1c2d3e-0000-4000-8000-0000000000c4"
_OPENAI_SURFACES: tuple[tuple[str, Surface], ...] = (("/v1", "openai"), ("/api/v1", "openrouter"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Render = Callable[[dict[str, Any], Plan], bytes]
RenderStream = Callable[[dict[str, Any], Plan], Iterator[bytes]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One API route: its provider, how it renders JSON and (if it can) a stream."""

    surface: Surface
    render: Render
    render_stream: RenderStream | None = None
    stream_error: Callable[[int], bytes] = lambda _index: OPENAI_STREAM_ERROR
    #: a completion counted in the usage reports: its max-tokens value (None: not counted)
    usage_limit: Callable[[dict[str, Any]], Any] | None = None


def _always(event: bytes) -> Callable[[int], bytes]:
    """A mid-stream error event that does not depend on its position."""
    return lambda _index: event


def provider_headers(surface: Surface, plan: Plan) -> dict[str, str]:
    """The provider's own response headers (request ids) for one request."""
    if surface == "anthropic":
        return {"request-id": plan.request_id, "anthropic-organization-id": _ANTHROPIC_ORG}
    if surface == "openrouter":
        return {"x-generation-id": "gen-" + plan.digest[:20]}
    return {"x-request-id": plan.request_id, "openai-processing-ms": "1"}


def _error(
    request: web.Request, surface: Surface, plan: Plan, failure: Failure, detail: str = ""
) -> web.Response:
    headers = provider_headers(surface, plan)
    if failure is Failure.RATE_LIMIT:
        headers["retry-after"] = "0"
    body = error_body(surface, failure, plan.request_id, detail)
    return json_response(request, plan, body, headers, failure.status)


_FAULT_FAILURES = {
    "400": Failure.BAD_JSON,
    "500": Failure.SERVER,
    "429": Failure.RATE_LIMIT,
    "529": Failure.OVERLOADED,
}


async def _admit(
    request: web.Request, surface: Surface, *, needs_body: bool
) -> tuple[dict[str, Any], Plan] | web.StreamResponse:
    """Journal the request and run the steps before rendering: either (body, plan) to
    render, or the response (an error, a fault) that ends the request here."""
    raw = await request.read() if needs_body else b""
    body = journal.parse_json(raw)
    journal.record(request, raw, body if needs_body else None)
    ident = identity(raw, body) if needs_body else request.path.encode()
    model = body.get("model") if isinstance(body, dict) else None
    plan = plan_for(request.app[DEFAULTS_KEY], request.headers, ident, model)
    if not has_key(request):
        return _error(request, surface, plan, Failure.AUTH)
    if not needs_body:
        body = {}
    elif not isinstance(body, dict):
        return _error(request, surface, plan, Failure.BAD_JSON)
    elif not isinstance(body.get("model"), str) or not body["model"]:
        return _error(request, surface, plan, Failure.NO_MODEL)
    if plan.shape.first_byte_delay_ms:
        if await idle(request, plan.shape.first_byte_delay_ms / 1000):
            return abort(request)
    fault = plan.fault
    if fault is not None:
        if fault in _FAULT_FAILURES:
            return _error(request, surface, plan, _FAULT_FAILURES[fault])
        if fault == "error-200":
            body_bytes = error_body(surface, Failure.SERVER, plan.request_id)
            return json_response(request, plan, body_bytes, provider_headers(surface, plan))
        if fault == "reset":
            return abort(request)
        if fault == "hang" and await idle(request):
            return abort(request)
    return body, plan


def _api_handler(endpoint: Endpoint) -> Handler:
    prelude = OPENROUTER_KEEPALIVE if endpoint.surface == "openrouter" else b""

    async def handler(request: web.Request) -> web.StreamResponse:
        admitted = await _admit(request, endpoint.surface, needs_body=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        body, plan = admitted
        if endpoint.usage_limit is not None:
            record_served(request, endpoint.surface, body, plan, endpoint.usage_limit(body))
        headers = provider_headers(endpoint.surface, plan)
        if endpoint.render_stream is not None and body.get("stream") is True:
            events = endpoint.render_stream(body, plan)
            return await stream_response(
                request, plan, headers, events, endpoint.stream_error, prelude
            )
        return json_response(request, plan, endpoint.render(body, plan), headers)

    return handler


async def _transcriptions(request: web.Request) -> web.StreamResponse:
    """A multipart transcription: JSON, or SSE with `stream=true` (no faults)."""
    form, ident = await media_wire.read_form(request)
    plan = plan_for(request.app[DEFAULTS_KEY], request.headers, ident)
    if not has_key(request):
        return _error(request, "openai", plan, Failure.AUTH)
    headers = provider_headers("openai", plan)
    if form.get("stream") == "true":
        events = media_wire.transcription_events(form, plan)
        return await stream_response(request, plan, headers, events, _always(OPENAI_STREAM_ERROR))
    return json_response(request, plan, media_wire.transcription_json(form, plan), headers)


def _request_surface(request: web.Request) -> Surface:
    if request.path.startswith("/api/"):
        return "openrouter"
    if "anthropic-version" in request.headers:
        return "anthropic"
    return "openai"


async def _models(request: web.Request) -> web.StreamResponse:
    surface = _request_surface(request)
    admitted = await _admit(request, surface, needs_body=False)
    if isinstance(admitted, web.StreamResponse):
        return admitted
    _, plan = admitted
    model = request.match_info.get("model")
    wire = anthropic_wire if surface == "anthropic" else openai_wire
    body = wire.model_json(model) if model else wire.MODELS_JSON
    return json_response(request, plan, body, provider_headers(surface, plan))


async def _not_found(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    journal.record(request, raw, journal.parse_json(raw))
    surface = _request_surface(request)
    plan = plan_for(request.app[DEFAULTS_KEY], request.headers, raw)
    detail = f" ({request.method} {request.path})"
    return _error(request, surface, plan, Failure.NOT_FOUND, detail)


def _endpoints(surface: Surface) -> dict[str, Endpoint]:
    """The OpenAI-format endpoints, for OpenAI itself or for OpenRouter."""
    openrouter = surface == "openrouter"
    stream_error = OPENROUTER_STREAM_ERROR if openrouter else OPENAI_STREAM_ERROR
    chat: dict[str, Endpoint] = {}
    for path, legacy in (("chat/completions", False), ("completions", True)):
        chat[path] = Endpoint(
            surface,
            partial(openai_wire.chat_json, legacy=legacy, openrouter=openrouter),
            partial(openai_wire.chat_events, legacy=legacy, openrouter=openrouter),
            _always(stream_error),
            openai_wire.max_tokens_of,
        )
    return {
        **chat,
        "embeddings": Endpoint(surface, openai_wire.embeddings_json),
        "images/generations": Endpoint(
            surface, media_wire.images_json, media_wire.images_events, _always(stream_error)
        ),
        "responses": Endpoint(
            surface,
            responses_wire.responses_json,
            responses_wire.responses_events,
            responses_stream_error,
            lambda body: body.get("max_output_tokens"),
        ),
    }


def create_mock_app(defaults: MockDefaults | None = None) -> web.Application:
    """The mock provider (OpenAI under /v1, Anthropic /v1/messages, OpenRouter /api/v1)."""
    app = web.Application(client_max_size=_MAX_BODY)
    app[DEFAULTS_KEY] = defaults or MockDefaults()
    app[realtime.DEFAULTS_KEY] = app[DEFAULTS_KEY]
    app[journal.JOURNAL_KEY] = journal.new_journal()
    routes = app.router
    routes.add_get("/_mock/requests", journal.list_requests)
    routes.add_delete("/_mock/requests", journal.clear_requests)
    for prefix, surface in _OPENAI_SURFACES:
        for path, endpoint in _endpoints(surface).items():
            routes.add_post(f"{prefix}/{path}", _api_handler(endpoint))
        routes.add_post(f"{prefix}/audio/transcriptions", _transcriptions)
        routes.add_get(f"{prefix}/models", _models)
        routes.add_get(f"{prefix}/models/{{model:.+}}", _models)
        routes.add_route("*", f"{prefix}/_mock/echo", journal.echo)
        routes.add_route("*", f"{prefix}/_mock/echo/{{tail:.*}}", journal.echo)
    messages = Endpoint(
        "anthropic",
        anthropic_wire.message_json,
        anthropic_wire.message_events,
        _always(ANTHROPIC_STREAM_ERROR),
        lambda body: body.get("max_tokens"),
    )
    count = Endpoint("anthropic", lambda _body, plan: anthropic_wire.count_tokens_json(plan))
    routes.add_post("/v1/messages", _api_handler(messages))
    routes.add_post("/v1/messages/count_tokens", _api_handler(count))
    routes.add_get("/v1/realtime", realtime.realtime)
    routes.add_get("/v1/responses", realtime.responses)
    files.add_routes(app)
    usage_reports.add_routes(app)
    routes.add_route("*", "/{tail:.*}", _not_found)
    return app
