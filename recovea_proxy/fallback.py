"""The fallback walk: a routed request's upstream call (step 5), target by target.

A request the routing lever gave a plan tries its targets in order — the rule's
`to`, its fallbacks, then the caller's own model, which is always tried last — and
the first answer that is not a failure is the one the client gets. Nothing has been
sent to the client while the walk runs (the response starts only in `pipe.deliver`),
so switching targets is invisible to it: the commit point is the first byte sent.

What moves the walk on to the next target (never on the last one, whose answer or
failure is the client's, as for a request no rule matched):

| attempt ends with | outcome label |
| --- | --- |
| no connection (refused, DNS, connect timeout) | `connect` |
| no response headers within the first-byte timeout | `timeout` |
| the connection broke before the headers, or before the first event | `reset` |
| HTTP 408, 429, 529, or any other 5xx | `status_408`, `status_429`, `status_529`, `status_5xx` |
| a 200 SSE stream whose first event (before any content) is an error | `error_event` |
| the workspace has no key for the target's provider | `no_key` |

Never on 400, 401, 403, 404 or 422 (or any other status): those say the request or
the configuration is wrong, and another model would hide it; they are returned as
they are. A served attempt is counted as `served`. Each attempt is counted on
`recovea_route_attempts_total{provider, model, outcome}` (model: a price-table name,
else `other`).

Bounds: at most `RECOVEA_ROUTE_MAX_ATTEMPTS` attempts (3; the plan is cut in the
middle, the caller's model stays last), one per target. A 429 or 503 whose
`Retry-After` is within `RECOVEA_ROUTE_RETRY_AFTER_MAX_S` (2 s) is waited out
before the next attempt when that goes to the same provider (whose limit may be
account-wide); to another provider, or with a longer `Retry-After`, the walk moves
on at once. The first event of a routed stream is looked for in at most
`RECOVEA_ROUTE_PEEK_MAX_KB` (64 KiB) of the stream; the last target's stream is not
held back at all. A request no rule matched makes exactly one attempt: the gateway
never multiplies the SDK's own retries.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from yarl import URL

from recovea_proxy.auth import Principal
from recovea_proxy.config import Settings
from recovea_proxy.errors import GatewayError
from recovea_proxy.exchange import Exchange
from recovea_proxy.json_bytes import dumps_held
from recovea_proxy.levers import LeverRequest
from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.sse import iter_events
from recovea_proxy.route_table import Target
from recovea_proxy.sources import Headers, ReplayPlan, UpstreamSource
from recovea_proxy.upstream import classify

_TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)
_SSE = b"text/event-stream"
#: event types that come before any content: a stream's first error after them
#: still moves the walk on
_PREAMBLE_TYPES = frozenset({"ping", "message_start", "response.created", "response.in_progress"})
_PREAMBLE_EVENTS = frozenset({b"ping", b"message_start"})


def upstream_url(x: Exchange, provider: str) -> URL:
    """The request's URL on `provider`: its base, then the checked raw path and query
    exactly as the client sent them (no requoting)."""
    url = x.rt.upstream_base[provider] + x.surface.upstream_path
    query = x.scope["query_string"]
    if query:
        url += "?" + query.decode("ascii")
    return URL(url, encoded=True)


async def walk(
    x: Exchange, request: LeverRequest, principal: Principal
) -> tuple[UpstreamSource | PeekedSource, bool]:
    """The first acceptable answer along the request's plan, and whether its usage is
    to be hidden from the client. Raises the last target's transport error."""
    rt, surface, record = x.rt, x.surface, x.record
    settings = rt.settings
    plan, parsed = request.plan, request.parsed
    assert plan is not None and parsed is not None
    targets = plan.targets
    if len(targets) > settings.route_max_attempts:
        targets = (*targets[: settings.route_max_attempts - 1], targets[-1])
    last = len(targets) - 1
    counted = rt.metrics.route_attempts
    forward = request.headers.forward
    peek_max = int(settings.route_peek_max_kb * 1024)
    for index, target in enumerate(targets):
        final = index == last
        provider = PROVIDERS[target.provider]
        # `parsed` names the target too: a provider may rebuild the body from it
        parsed["model"] = target.model
        if index == 0:
            body = request.body
        elif final:
            body = request.baseline_body  # the caller's model: the body as it came
        else:
            body = dumps_held(parsed)
        body, hide_usage = provider.prepare_request(surface.kind, parsed, body)
        if provider is not surface.provider:
            hide_usage = (
                hide_usage or surface.provider.prepare_request(surface.kind, parsed, body)[1]
            )
            try:
                credentials = await rt.auth.credentials_for(principal.workspace_id, provider)
            except GatewayError:
                credentials = None
            if credentials is None:
                counted.labels(target.provider, target.label, "no_key").inc()
                continue
        else:
            credentials = principal.upstream_credentials
        try:
            response = await rt.upstream.request(
                x.scope["method"],
                upstream_url(x, target.provider),
                [*forward, *credentials],
                body or None,
            )
        except _TRANSPORT_ERRORS as exc:
            kind = classify(exc)
            counted.labels(target.provider, target.label, kind).inc()
            if final:
                raise
            rt.metrics.upstream_errors.labels(target.provider, kind).inc()
            continue
        upstream = UpstreamSource(response, settings.idle_read_timeout_s)
        source: UpstreamSource | PeekedSource = upstream
        if not final:
            outcome = _failed_status(response.status)
            streamed = upstream.content_type.startswith(_SSE)
            if outcome is None and response.status == 200 and streamed:
                try:
                    peeked = await _peek(upstream, peek_max)
                except upstream.errors as exc:
                    outcome = classify(exc)
                else:
                    if peeked is None:
                        outcome = "error_event"
                    else:
                        source = peeked
            if outcome is not None:
                counted.labels(target.provider, target.label, outcome).inc()
                response.close()
                await _wait_retry_after(
                    response.status, response.headers, target, targets[index + 1], settings
                )
                continue
        counted.labels(target.provider, target.label, "served").inc()
        record.realized_model = target.model
        record.provider = target.provider
        record.fell_back = final and index > 0
        return source, hide_usage
    raise AssertionError("the last target always answers or raises")  # pragma: no cover


def _failed_status(status: int) -> str | None:
    """The outcome label of a status that moves the walk on; None for one that does not."""
    if status == 408 or status == 429 or status == 529:
        return f"status_{status}"
    if status >= 500:
        return "status_5xx"
    return None


async def _wait_retry_after(
    status: int, headers: Any, failed: Target, following: Target, settings: Settings
) -> None:
    """Wait out a short `Retry-After` when the next attempt goes to the same provider."""
    if status not in (429, 503) or failed.provider != following.provider:
        return
    seconds = retry_after_s(headers.get("retry-after"))
    if seconds is not None and 0 < seconds <= settings.route_retry_after_max_s:
        await asyncio.sleep(seconds)


def retry_after_s(raw: str | None) -> float | None:
    """`Retry-After` in seconds when it is a number (an HTTP date is not waited for)."""
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


async def _peek(source: UpstreamSource, limit: int) -> PeekedSource | None:
    """Read a routed stream up to its first content event: None when an error event
    comes first; else the source with what was read put back in front."""
    head = b""
    while len(head) < limit:
        chunk = await source.read()
        if not chunk:
            break
        head += chunk
        verdict = first_verdict(head)
        if verdict == "error":
            return None
        if verdict == "content":
            break
    return PeekedSource(source, head)


def first_verdict(buf: bytes) -> str | None:
    """`error` when the stream's first event after its preamble (comments, pings, the
    message or response start, role-only chunks) is an error; `content` when it is
    anything else; None when no such event is complete in `buf` yet."""
    for name, joined in iter_events(buf, complete_only=True):
        if name == b"error":
            return "error"
        if joined is None or name in _PREAMBLE_EVENTS:
            continue
        if joined == b"[DONE]":
            return "content"
        try:
            obj = orjson.loads(joined)
        except orjson.JSONDecodeError:
            return "content"
        if not isinstance(obj, dict):
            return "content"
        if "error" in obj or obj.get("type") == "error":
            return "error"
        if obj.get("type") in _PREAMBLE_TYPES or _role_only(obj.get("choices")):
            continue
        return "content"
    return None


def _role_only(choices: object) -> bool:
    """A chat chunk that carries no content yet (OpenAI's first, role-only chunk)."""
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
            return False
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        if any(delta.get(name) for name in ("content", "tool_calls", "function_call", "refusal")):
            return False
    return True


class PeekedSource:
    """An upstream stream whose first bytes were read to look at its first event: they
    are read again first, then the rest as it comes."""

    __slots__ = (
        "_head",
        "_inner",
        "content_length",
        "content_type",
        "errors",
        "identity_encoded",
        "raw_headers",
        "status",
    )

    plan: ReplayPlan | None = None

    def __init__(self, inner: UpstreamSource, head: bytes) -> None:
        self._inner = inner
        self._head = head
        self.status: int = inner.status
        self.raw_headers: Headers = inner.raw_headers
        self.content_type: bytes = inner.content_type
        self.content_length: int | None = inner.content_length
        self.identity_encoded: bool = inner.identity_encoded
        self.errors = inner.errors

    async def read(self) -> bytes:
        head = self._head
        if head:
            self._head = b""
            return head
        return await self._inner.read()

    def kind_of(self, exc: BaseException) -> str:
        return self._inner.kind_of(exc)

    def start_body(self) -> None:
        self._inner.start_body()

    def finish(self, *, clean: bool) -> None:
        self._inner.finish(clean=clean)
