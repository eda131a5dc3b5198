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

import aiohttp

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
