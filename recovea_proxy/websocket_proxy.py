"""WebSocket sessions on the provider surfaces (OpenAI's Realtime API and the Responses
API's WebSocket mode): the handshake, then the relay (`websocket_relay`) and the
metering (`websocket_meter`), and the session's report.

1. the path and query are checked as for HTTP; only OpenAI-style surfaces
   (`/v1/*`, `/openai/v1/*`, `/openrouter/api/v1/*`) take WebSockets
2. auth as for HTTP, from the handshake's headers: the rcv_ key stays here, the
   workspace's provider key (or, in passthrough mode, the caller's own) goes upstream;
   then the rate and concurrency limits: a session is one request at the handshake
   and holds one concurrency slot until it ends (no tokens are charged for it)
3. the upstream handshake on the shared session: the checked raw path and query, the
   forwarded headers (`OpenAI-Beta`, ...; not the WebSocket handshake's own, which
   aiohttp makes), the offered subprotocols (not a key-carrying one)
4. accept the client with the provider's chosen subprotocol, then relay

Refusals before accepting use the ASGI denial response (`websocket.http.response`):
the same status and provider-shaped JSON error as HTTP (a close, seen as 403, where
the server has no denial response). They are reported like HTTP refusals: a log
line, the request metrics, and a ledger row once the workspace is known.

| situation                          | status                        | code |
| bad path or query                  | 400                           | `invalid_path` |
| an Anthropic surface               | 400                           | `websocket_unsupported` |
| auth                               | as HTTP (401, 400, 503)       | as HTTP |
| a rate or concurrency limit        | 429                           | `rate_limited` |
| an enabled spend cap (unmetered    | 402                           | `budget_unverifiable` |
| paths not allowed; no room)        |                               | / `budget_exceeded` |
| the provider refused the handshake | the provider's (4xx/5xx; else 502) | `upstream_refused` |
| the provider could not be reached  | 502                           | `upstream_unreachable` |

aiohttp drops the body of a refused upstream handshake unread, so the provider's
status is passed on but its message is the gateway's.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from urllib.parse import parse_qsl

import aiohttp
from yarl import URL

from recovea_proxy.asgi import Receive, Scope, Send
from recovea_proxy.clean import clean_model
from recovea_proxy.errors import GatewayError, error_body
from recovea_proxy.guards.limits import Ticket
from recovea_proxy.headers import split_request_headers
from recovea_proxy.ids import new_id
from recovea_proxy.record import RequestRecord
from recovea_proxy.runtime import Runtime
from recovea_proxy.surfaces import Surface, query_is_clean
from recovea_proxy.upstream import unreachable
from recovea_proxy.websocket_meter import WebSocketMeter
from recovea_proxy.websocket_relay import FAULT, Counters, Ending, Relay, client_ending

#: the WebSocket paths with a route template and a metering mode of their own
REALTIME_PATH = "/v1/realtime"
RESPONSES_PATH = "/v1/responses"
# Handshake headers aiohttp makes itself (the hop-by-hop ones are never forwarded).
_HANDSHAKE = frozenset(
    {
        "accept-encoding",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
_CLOSE_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
_DENIAL = "websocket.http.response"


async def serve_websocket(
    rt: Runtime, surface: Surface, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one WebSocket session on a provider surface; always report it."""
    session = RequestRecord(
        request_id=new_id(),
        trace_id="",
        started_ns=time.perf_counter_ns(),
        ts_epoch_ms=time.time_ns() // 1_000_000,
        method="GET",
        provider=surface.provider.name,
        stream=True,
    )
    path = surface.upstream_path
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    prefix = raw_path[: len(raw_path) - len(path)].decode("ascii")
    session.route = prefix + path if path in (REALTIME_PATH, RESPONSES_PATH) else surface.route
    session.kind = "responses_websocket" if path == RESPONSES_PATH else "realtime"
    if (await receive())["type"] != "websocket.connect":
        return
    # the session's rate and concurrency limits: one request, one slot for its lifetime
    tickets: list[Ticket] = []
    try:
        await _serve(rt, surface, scope, receive, send, session, tickets)
    finally:
        for ticket in tickets:
            ticket.end(session)


async def _serve(
    rt: Runtime,
    surface: Surface,
    scope: Scope,
    receive: Receive,
    send: Send,
    session: RequestRecord,
    tickets: list[Ticket],
) -> None:
    try:
        upstream = await _open(rt, surface, scope, session, tickets)
    except GatewayError as exc:
        await _refuse(rt, scope, send, session, surface.error_shape, exc)
        return
    except asyncio.CancelledError:
        session.error_code = "cancelled"
        session.end(time.perf_counter_ns())
        rt.finish(session)
        raise
    except Exception:
        rt.log.exception("websocket_failed", request_id=session.request_id)
        error = GatewayError(500, "internal_error", "The gateway failed to open the session.")
        await _refuse(rt, scope, send, session, surface.error_shape, error)
        return
    await _relay(rt, session, upstream, receive, send)


async def _open(
    rt: Runtime, surface: Surface, scope: Scope, session: RequestRecord, tickets: list[Ticket]
) -> aiohttp.ClientWebSocketResponse[bool]:
    """Steps 1 to 3: the checks, auth (and the limits: their ticket goes in `tickets`),
    and the upstream handshake."""
    query: bytes = scope["query_string"]
    if surface.invalid or (query and not query_is_clean(query)):
        raise GatewayError(
            400,
            "invalid_path",
            "The path holds dot segments, empty segments, encoded / ? # . % or "
            "characters that need no encoding, or bytes outside printable ASCII.",
        )
    if surface.error_shape != "openai":
        raise GatewayError(
            400,
            "websocket_unsupported",
            "WebSocket sessions are proxied on OpenAI-style surfaces only.",
        )
    headers = split_request_headers(scope["headers"])
    session.trace_id = headers.trace_id or new_id()
    session.feature = headers.feature
    session.end_user_id = headers.customer
    provider = surface.provider
    principal = rt.auth.known_principal(headers, provider) or await rt.auth.load_principal(
        headers, provider
    )
    session.workspace_id = principal.workspace_id
    session.project_id = principal.project_id
    session.team_id = principal.team_id
    session.rcv_key_id = principal.key_id
    session.env = principal.env
    session.model = _query_model(query)
    ticket = await rt.limits.admit(principal, session.model, None, None, surface.error_shape)
    if ticket is not None:
        tickets.append(ticket)
    caps = rt.caps.applies(principal)
    if caps is not None:  # refused or charged at the handshake (guards.caps)
        await rt.caps.charge_session(caps, principal, surface.upstream_path)

    forward = [(n, v) for n, v in headers.forward if n not in _HANDSHAKE]
    forward.extend(principal.upstream_credentials)
    # Built only from the checked raw path and query, sent as they are (no requoting).
    url = rt.upstream_base[provider.name] + surface.upstream_path
    if query:
        url += "?" + query.decode("ascii")
    heartbeat = rt.settings.ws_heartbeat_s
    waited = time.perf_counter_ns()
    try:
        return await rt.session.ws_connect(
            URL(url, encoded=True),
            headers=forward,
            protocols=_subprotocols(scope),
            max_msg_size=rt.settings.ws_max_frame_bytes,
            heartbeat=heartbeat or None,
            decode_text=False,
            timeout=_CLOSE_TIMEOUT,
        )
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if 400 <= exc.status < 600 else 502
        raise GatewayError(
            status,
            "upstream_refused",
            f"The provider refused the WebSocket handshake (status {exc.status}).",
            _upstream_id(exc),
        ) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise unreachable(rt.metrics, provider.name, exc) from exc
    finally:
        session.upstream_wait_ns += time.perf_counter_ns() - waited


async def _relay(
    rt: Runtime,
    session: RequestRecord,
    upstream: aiohttp.ClientWebSocketResponse[bool],
    receive: Receive,
    send: Send,
) -> None:
    """Step 4: accept, relay until either side ends, then report the session."""
    labels = (session.provider, session.route)
    metrics = rt.metrics
    metrics.ws_sessions.labels(*labels, "accepted").inc()
    still_open = metrics.ws_open.labels(*labels)
    still_open.inc()
    session.status_code = 101
    meter = WebSocketMeter(rt, session, realtime=session.kind == "realtime")
    ending: Ending = FAULT
    relay: Relay | None = None
    try:
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": upstream.protocol,
                "headers": [
                    (b"x-request-id", session.request_id.encode()),
                    (b"x-recovea-trace-id", session.trace_id.encode("latin-1")),
                ],
            }
        )
        counters = Counters(
            metrics.ws_frames.labels(*labels, "client_to_upstream"),
            metrics.ws_bytes.labels(*labels, "client_to_upstream"),
            metrics.ws_frames.labels(*labels, "upstream_to_client"),
            metrics.ws_bytes.labels(*labels, "upstream_to_client"),
        )
        relay = Relay(upstream, receive, send, meter, counters, rt.log)
        ending = await relay.run()
    except OSError:
        ending = client_ending(1006)  # the client left before it was accepted
    finally:
        if relay is not None and relay.ending is not None:
            ending = relay.ending
        if not upstream.closed:
            await upstream.close(code=1001)
        still_open.dec()
        metrics.ws_closed.labels(*labels, ending.reason).inc()
        meter.finish(
            success=ending.success, error_code=ending.error_code, client_left=ending.client_left
        )
        rt.log.info(
            "websocket_closed",
            request_id=session.request_id,
            trace_id=session.trace_id,
            provider=session.provider,
            route=session.route,
            reason=ending.reason,
            responses=meter.responses,
        )


async def _refuse(
    rt: Runtime, scope: Scope, send: Send, session: RequestRecord, shape: str, exc: GatewayError
) -> None:
    """Answer the handshake with the gateway's error instead of 101, and report it."""
    session.status_code = exc.status
    session.error_code = exc.code
    session.success = False
    session.trace_id = session.trace_id or new_id()
    body = error_body(shape, exc.status, exc.code, exc.message)
    session.request_sha256 = hashlib.sha256(b"").hexdigest()
    session.response_hash = hashlib.sha256(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"x-request-id", session.request_id.encode()),
        (b"x-recovea-trace-id", session.trace_id.encode("latin-1")),
    ]
    if exc.status in (401, 403):
        headers.append((b"x-should-retry", b"false"))
    headers.extend(exc.headers)
    try:
        if _DENIAL in (scope.get("extensions") or {}):
            start = {"type": "websocket.http.response.start", "status": exc.status}
            await send({**start, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
        session.responded = True
    except OSError:
        session.client_gone = True
    rt.metrics.ws_sessions.labels(session.provider, session.route, "refused").inc()
    session.end(time.perf_counter_ns())
    rt.finish(session)


def _query_model(query: bytes) -> str | None:
    """The `model=` of a Realtime handshake's query, if any."""
    if b"model=" not in query:
        return None
    for name, value in parse_qsl(query.decode("ascii")):
        if name == "model":
            return clean_model(value)
    return None


def _subprotocols(scope: Scope) -> list[str]:
    """The subprotocols the client offered, less any that carries a credential
    (browsers put a key in `openai-insecure-api-key.<key>`): credentials go in headers."""
    return [
        p
        for p in scope.get("subprotocols") or ()
        if "api-key" not in p.lower() and "rcv_" not in p.lower()
    ]


def _upstream_id(exc: aiohttp.WSServerHandshakeError) -> tuple[tuple[bytes, bytes], ...]:
    """The provider's request id of a refused handshake, as the gateway returns it."""
    found = exc.headers.get("x-request-id") if exc.headers else None
    if found is None or not found.isascii() or not found.isprintable():
        return ()
    return ((b"x-recovea-upstream-request-id", found[:128].encode()),)
