"""The one upstream HTTP client, and how its failures map to the gateway's errors.

Failure tree (what the caller sees):

    502 upstream_unreachable (`unreachable`), before any byte was sent:
      kind="connect"   could not open a connection (refused, DNS, connect timeout),
                       or no pooled connection came free within the pool wait
      kind="timeout"   no response headers within the first-byte timeout
      kind="reset"     the connection broke before the response headers
    mid-stream (after the response started): not an exception to the caller; the
      stream ends with a provider-shaped SSE error event
      kind="reset"         the upstream connection broke
      kind="idle_timeout"  no bytes for the idle-read timeout
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.client import IDEMPOTENT_METHODS
from aiohttp.helpers import TimerNoop
from yarl import URL

from recovea_proxy.config import Settings
from recovea_proxy.errors import GatewayError
from recovea_proxy.observability.metrics import GatewayMetrics


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """The app's one client session: explicit limits, no total timeout, raw bytes."""
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections,
        limit_per_host=0,
        keepalive_timeout=60,
        enable_cleanup_closed=False,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=first_byte_timeout(settings),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Content-Type"),
        raise_for_status=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=2**16,
    )


#: the aiohttp releases whose private parts `UpstreamClient` reads (checked at start:
#: under another, every request takes `ClientSession.request`)
_LEAN_AIOHTTP = ("3.14.",)


class UpstreamClient:
    """Sends the gateway's upstream requests on the app's one session.

    A request with a body held in memory (every model call: a POST) takes the steps
    `ClientSession.request` takes for it, on aiohttp's own objects (`ClientRequest`,
    the pooled connection, `ClientResponse`), without the generality the gateway never
    uses: redirects, cookies, proxies, auth, tracing, middlewares, a total timeout,
    per-call options. That generality cost ~15 µs a request (~600 bytecodes, a
    sixth of the gateway's per-request work in aiohttp). What it does keep: the
    connection timeout (`ConnectionTimeoutError`), the read timeout and limits of the
    session, its skipped automatic headers, and `ClientSession.request`'s errors
    (an `OSError` becomes `ClientOSError`).

    The rest take `ClientSession.request` itself: a body streamed as it arrives, and the
    idempotent methods, which aiohttp retries once when a kept-alive connection turns
    out closed. So does every request when the installed aiohttp is not a release the
    steps were written against (`_LEAN_AIOHTTP`), or the session has a total timeout,
    trace hooks, middlewares, a default proxy, `trust_env` or an HTTP version other
    than 1.1.
    """

    __slots__ = ("_connector", "_params", "_request_kwargs", "_timeout", "lean", "session")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        #: whether requests with a body in memory take the lean steps
        self.lean = (
            aiohttp.__version__.startswith(_LEAN_AIOHTTP)
            and session.timeout.total is None
            and not session.trace_configs
            and not getattr(session, "_middlewares", ())
            and getattr(session, "_default_proxy", None) is None
            and not session.trust_env
            and getattr(session, "_version", None) == aiohttp.HttpVersion11
        )
        if not self.lean:
            return
        connector = session.connector
        assert connector is not None
        self._connector = connector
        self._timeout = session.timeout
        timer = TimerNoop()  # stateless: what aiohttp uses without a total timeout
        self._request_kwargs: dict[str, Any] = {
            "loop": session._loop,
            "response_class": session._response_class,
            "session": session,
            "ssl": True,
            "timer": timer,
            "skip_auto_headers": session.skip_auto_headers or None,
        }
        self._params: dict[str, Any] = {
            "timer": timer,
            "skip_payload": False,
            "read_until_eof": True,
            "auto_decompress": session.auto_decompress,
            "read_timeout": self._timeout.sock_read,
            "read_bufsize": session._read_bufsize,
            "timeout_ceil_threshold": connector._timeout_ceil_threshold,
            "max_line_size": session._max_line_size,
            "max_field_size": session._max_field_size,
            "max_headers": session._max_headers,
        }

    async def request(
        self,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        data: Any = None,
    ) -> aiohttp.ClientResponse:
        """Send one request, redirects not followed; its response, begun (status and
        headers read). Raises what `ClientSession.request` raises."""
        if (
            not self.lean
            or method in IDEMPOTENT_METHODS
            or not (data is None or type(data) is bytes)
        ):
            return await self.session.request(
                method, url, headers=headers, data=data, allow_redirects=False
            )
        if self.session.closed:
            raise RuntimeError("Session is closed")
        request = aiohttp.ClientRequest(
            method, url, headers=headers, data=data, traces=[], **self._request_kwargs
        )
        # (`ClientSession.request` then closes the request's payload: one of bytes
        # holds nothing to close)
        try:
            return await self._send(request)
        except aiohttp.ClientError:
            raise
        except OSError as exc:
            if exc.errno is None and isinstance(exc, TimeoutError):
                raise
            raise aiohttp.ClientOSError(*exc.args) from exc

    async def _send(self, request: aiohttp.ClientRequest) -> aiohttp.ClientResponse:
        """`ClientSession._request`'s connect and send, for one request."""
        try:
            connection = await self._connector.connect(request, [], self._timeout)
        except TimeoutError as exc:
            raise aiohttp.ConnectionTimeoutError(
                f"Connection timeout to host {request.url}"
            ) from exc
        protocol = connection.protocol
        assert protocol is not None
        protocol.set_response_params(**self._params)
        try:
            response = await request.send(connection)
            try:
                await response.start(connection)
            except BaseException:
                response.close()
                raise
        except BaseException:
            connection.close()
            raise
        return response


def first_byte_timeout(settings: Settings) -> aiohttp.ClientTimeout:
    """The connect timeout; the wait for a pooled connection when all are busy (plus
    the connect timeout: aiohttp's `connect` covers both); and the read timeout that
    bounds the wait for response headers."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=settings.upstream_pool_wait_s + settings.connect_timeout_s,
        sock_connect=settings.connect_timeout_s,
        sock_read=settings.first_byte_timeout_s,
    )


def classify(exc: BaseException) -> str:
    """A short, bounded label for an upstream failure (used in metrics and logs)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect"
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "reset"
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return "reset"
    return "error"


def unreachable(metrics: GatewayMetrics, provider: str, exc: BaseException) -> GatewayError:
    """502 `upstream_unreachable` for a failure before the response headers, counted in
    `recovea_upstream_errors_total` and `gateway_fail_open_total{layer="upstream"}`
    (on the failure path only: a success pays nothing for the lookups)."""
    kind = classify(exc)
    metrics.upstream_errors.labels(provider, kind).inc()
    metrics.fail_open.labels("upstream", kind).inc()
    return GatewayError(502, "upstream_unreachable", f"The provider could not be reached ({kind}).")
