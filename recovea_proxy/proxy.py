"""The request pipeline: one coroutine per provider request, read top to bottom.

1. surface (resolved by the dispatcher, on the checked raw path)
2. auth (fail-closed) → principal, from the headers alone; then the body (bounded),
   parsed once
3. guards: rate and concurrency limits (`guards.limits`: 429, or a ticket settled at
   step 8); the spend cap (fail-closed-hybrid: a reservation from this process's
   budget lease, settled at step 8)
4. levers, each through the one fault-catching wrapper (slim, routing, cache, dedup)
5. upstream call on the shared session (a routed request walks its plan: `fallback`)
6. response pipe: tap the bytes on their way to the client, unchanged
7. end: finalize the record, sign the receipt, send it as the response's last bytes
8. after the response: end the limits' ticket and settle the cap reservation with the
   real usage, then report it (log, metrics, meter queue)
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp

from recovea_proxy.asgi import Receive, Scope, Send
from recovea_proxy.auth import Principal
from recovea_proxy.clean import clean_model
from recovea_proxy.errors import GatewayError
from recovea_proxy.exchange import Exchange
from recovea_proxy.fallback import upstream_url, walk
from recovea_proxy.headers import split_request_headers
from recovea_proxy.ids import new_id
from recovea_proxy.levers import LeverRequest
from recovea_proxy.levers.flights import Subscription
from recovea_proxy.levers.shadow import shadow_sample
from recovea_proxy.pipe import deliver, send_error
from recovea_proxy.record import RequestRecord
from recovea_proxy.request_body import ClientGone, parse_json_object, read_body
from recovea_proxy.request_upload import (
    StreamedBody,
    is_multipart,
    is_upload,
    refuse_declared,
)
from recovea_proxy.runtime import Runtime
from recovea_proxy.sources import ResponseSource, UpstreamSource
from recovea_proxy.surfaces import Surface, query_is_clean
from recovea_proxy.upstream import classify, unreachable


async def handle(rt: Runtime, surface: Surface, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one provider request; always report it, whatever happens."""
    record = RequestRecord(
        request_id=new_id(),
        trace_id="",
        started_ns=time.perf_counter_ns(),
        ts_epoch_ms=time.time_ns() // 1_000_000,
    )
    record.method = scope["method"]
    record.provider = surface.provider.name
    record.route = surface.route
    record.kind = surface.kind
    x = Exchange(rt, surface, scope, receive, send, record)
    rt.in_flight += 1
    try:
        if surface.invalid or (scope["query_string"] and not query_is_clean(scope["query_string"])):
            raise GatewayError(
                400,
                "invalid_path",
                "The path holds dot segments, empty segments, encoded / ? # . % or "
                "characters that need no encoding, or bytes outside printable ASCII.",
            )
        if rt.in_flight > rt.settings.max_in_flight:
            raise _overloaded()
        await _serve(x)
    except GatewayError as exc:
        record.status_code = exc.status
        record.error_code = exc.code
        record.success = False
        if exc.code == "auth_unavailable":
            rt.metrics.auth_unavailable.inc()
        shape = _refused_path_shape(scope) if surface.invalid else surface.error_shape
        await send_error(rt, send, record, shape, exc)
    except ClientGone:
        record.client_gone = True
        record.success = None
    except asyncio.CancelledError:
        # The server is shutting down past its grace: the outcome is unknown.
        record.success = None
        record.error_code = "cancelled"
        raise
    except Exception:
        # A bug, not a provider fault: answer in the caller's shape if nothing was sent yet.
        record.success = False
        record.error_code = "internal_error"
        rt.log.exception("request_failed", request_id=record.request_id)
        if not record.responded:
            record.status_code = 500
            error = GatewayError(500, "internal_error", "The gateway failed to handle the request.")
            await send_error(rt, send, record, surface.error_shape, error)
    finally:
        record.end(time.perf_counter_ns())
        rt.in_flight -= 1
        if x.ticket is not None:
            x.ticket.end(record)
        if x.reservation is not None:
            rt.caps.settle(x.reservation, record)  # step 8: also when aborted
        rt.finish(record)


async def _serve(x: Exchange) -> None:
    """Steps 2 to 6: auth, the body, the levers, then the answer or the upstream call."""
    rt, surface, record = x.rt, x.surface, x.record
    headers = split_request_headers(x.scope["headers"])
    record.trace_id = headers.trace_id or new_id()
    record.parent_span_id = headers.parent_span_id
    record.feature = headers.feature
    record.end_user_id = headers.customer

    # Auth reads the headers only: a caller without a valid key costs no body read.
    principal = rt.auth.known_principal(headers, surface.provider) or await rt.auth.load_principal(
        headers, surface.provider
    )
    record.workspace_id = principal.workspace_id
    record.project_id = principal.project_id
    record.team_id = principal.team_id
    record.rcv_key_id = principal.key_id
    record.env = principal.env
    caps = rt.caps.applies(principal)  # None: not capped, no database work at all

    if is_upload(headers.content_type):
        # Not JSON: streamed to the provider as it arrives, past the levers.
        refuse_declared(headers.content_length, rt.settings.max_upload_bytes)
        x.ticket = await rt.limits.admit(principal, None, None, None, surface.error_shape)
        if caps is not None:  # step 3, before the first byte is forwarded
            x.reservation = await rt.caps.reserve(
                caps, principal, record, surface.upstream_path, None, headers.content_length
            )
        upload = StreamedBody(
            x.receive,
            record,
            rt.settings.max_upload_bytes,
            multipart=is_multipart(headers.content_type),
        )
        request = LeverRequest(record, surface, headers, b"", None, principal.policy)
        await _call(x, request, principal, upload)
        return
    body = await read_body(x.receive, headers, rt.settings.max_body_bytes)
    record.request_bytes = len(body)
    record.request_sha256 = hashlib.sha256(body).hexdigest()
    parsed = parse_json_object(body)
    if parsed is not None:
        record.model = clean_model(parsed.get("model"))
        record.stream = parsed.get("stream") is True
    x.ticket = await rt.limits.admit(principal, record.model, body, parsed, surface.error_shape)

    request = LeverRequest(
        record, surface, headers, body, parsed, principal.policy, x.scope["query_string"]
    )
    if caps is not None:  # step 3: the spend cap's reservation
        reservation = x.reservation = await rt.caps.reserve(
            caps, principal, record, surface.upstream_path, parsed
        )
        if reservation is not None and reservation.watch is not None:
            request.observers.append(reservation.watch)
    chain = rt.chains.chain_for(principal.policy)
    if chain is None:
        await _call(x, request, principal)
        return
    try:
        pending = chain.start(request)
        if pending is not None:  # a lever waits (a shared cache's lookup)
            await pending
        if request.answer is not None:
            await _answer(x, request, request.answer, principal)
        else:
            await _call(x, request, principal)
    finally:
        for release in request.release:
            release()
        flight = request.flight
        if flight is not None and flight.state == "waiting":
            # it led a flight, but never got to its upstream call: followers go alone
            rt.flights.fail(flight, "abandoned")


async def _answer(
    x: Exchange, request: LeverRequest, answer: ResponseSource, principal: Principal
) -> None:
    """Step 6 for a request a lever answered (a cache hit, a flight in progress). A
    follower whose flight does not begin in time, or failed before its first byte,
    calls upstream on its own."""
    if isinstance(answer, Subscription) and not await answer.ready(
        x.rt.settings.flight_first_byte_wait_s
    ):
        answer.finish(clean=False)
        x.record.dedup_singleflight = False
        x.record.levers_fired["dedup"] = "miss"
        await _call(x, request, principal)
        return
    hide_usage = False
    if request.parsed is not None:
        surface = x.surface
        _, hide_usage = surface.provider.prepare_request(surface.kind, request.parsed, request.body)
    try:
        await deliver(x, answer, hide_usage=hide_usage, observers=request.observers)
    finally:
        answer.finish(clean=not (x.record.client_gone or x.record.error_code))


async def _call(
    x: Exchange, request: LeverRequest, principal: Principal, upload: StreamedBody | None = None
) -> None:
    """Steps 5 and 6: the upstream call on the shared session, and its response.
    `upload`: a body streamed as it arrives instead of `request.body`."""
    rt, surface, record = x.rt, x.surface, x.record
    provider = surface.provider
    flight = request.flight
    waited = time.perf_counter_ns()
    source: ResponseSource
    shadowed = None
    try:
        if request.plan is None:
            source, hide_usage = await _attempt(x, request, principal, upload)
        else:
            # A routing rule matched: its targets in order, up to the commit point.
            source, hide_usage = await walk(x, request, principal)
            if request.plan.shadow:
                # a sampled share of the rule's answers is compared with the caller's model
                shadowed = shadow_sample(x, request, principal)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        if upload is not None and (cause := upload.cause()) is not None:
            raise cause from None
        error = unreachable(rt.metrics, provider.name, exc)
        if flight is not None:
            rt.flights.fail(flight, classify(exc))
        raise error from exc
    finally:
        record.upstream_wait_ns += time.perf_counter_ns() - waited
    if upload is not None:
        upload.settle()
    try:
        await deliver(
            x, source, hide_usage=hide_usage, observers=request.observers, recorder=flight
        )
    finally:
        clean = not (record.client_gone or record.error_code)
        if flight is None:
            source.finish(clean=clean)
        else:
            rt.flights.leader_left(flight, source, clean=clean)
    if shadowed is not None:
        rt.shadow.submit(shadowed, record.success)  # after the response: never delays it


async def _attempt(
    x: Exchange, request: LeverRequest, principal: Principal, upload: StreamedBody | None
) -> tuple[UpstreamSource, bool]:
    """The one upstream attempt of a request no routing rule matched, and whether its
    usage is to be hidden from the client."""
    rt, surface = x.rt, x.surface
    provider = surface.provider
    body, parsed = request.body, request.parsed
    hide_usage = False
    if parsed is not None:
        body, hide_usage = provider.prepare_request(surface.kind, parsed, body)

    forward = request.headers.forward
    forward.extend(principal.upstream_credentials)
    data: bytes | AsyncIterator[bytes] | None = body or None
    if upload is not None:
        data = upload.chunks()
        if request.headers.content_length is not None:
            # sent as declared, not re-framed as chunked (providers may not take chunked)
            forward.append(("content-length", str(request.headers.content_length)))
    response = await rt.upstream.request(
        x.scope["method"], upstream_url(x, provider.name), forward, data
    )
    return UpstreamSource(response, rt.settings.idle_read_timeout_s), hide_usage


def _refused_path_shape(scope: Scope) -> str:
    """The error shape for a refused path, which may not name its surface: Anthropic's
    when the request carries `anthropic-version` (every Anthropic SDK sends it)."""
    for name, _ in scope["headers"]:
        if name == b"anthropic-version":
            return "anthropic"
    return "anthropic" if scope.get("raw_path", b"").startswith(b"/anthropic/") else "openai"


def _overloaded() -> GatewayError:
    return GatewayError(
        503,
        "gateway_overloaded",
        "The gateway is serving as many requests as it is configured for; retry shortly.",
        ((b"retry-after", b"1"),),
    )
