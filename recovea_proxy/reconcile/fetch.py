"""The poller's one HTTP client, and how a report call fails.

Strict timeouts from the gateway's upstream settings: the connect timeout as for
provider calls, and a whole-call bound (`RECOVEA_RECONCILE_TIMEOUT_S`) on every page,
since a report answer is small and never streamed. A small connection pool: the poller
makes one call at a time. GET only: the usage and cost endpoints are read-only.

Failure tree (`ReportFailure.reason`, bounded: it is stored, logged and counted):

    unauthorized   401 or 403: the report key is wrong, revoked or not an admin key
                   (not retried: waiting will not fix it)
    rate_limited   429; `retry_after` holds the provider's retry-after in seconds
    status_5xx     a server error (500, 502, 503, 529, ...)
    status_4xx     any other 4xx (a request the provider does not accept)
    malformed      a body that is not JSON, or not the documented shape
    timeout        no complete answer within the timeout
    unreachable    no connection (refused, DNS, reset)

Neither the key nor the provider's error body is ever put in a reason or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from recovea_proxy.config import Settings

#: the most bytes a report page may have
PAGE_MAX_BYTES = 16 * 1024 * 1024
RETRYABLE = frozenset({"rate_limited", "status_5xx", "malformed", "timeout", "unreachable"})


class ReportFailure(Exception):
    """A report call that did not give a usable page."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE


def open_report_client(settings: Settings) -> aiohttp.ClientSession:
    """The poller's client: a few connections, strict timeouts, no cookies."""
    connector = aiohttp.TCPConnector(limit=4, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=settings.reconcile_timeout_s,
            connect=settings.connect_timeout_s,
            sock_read=settings.reconcile_timeout_s,
        ),
        raise_for_status=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _retry_after(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None  # an HTTP date: the caller's own backoff applies
    return seconds if seconds >= 0 else None


async def get_page(
    client: aiohttp.ClientSession,
    url: str,
    params: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
) -> Any:
    """One report page as JSON, or ReportFailure."""
    try:
        async with client.get(url, params=list(params), headers=dict(headers)) as response:
            status = response.status
            if status in (401, 403):
                raise ReportFailure("unauthorized")
            if status == 429:
                retry_after = _retry_after(response.headers.get("retry-after"))
                raise ReportFailure("rate_limited", retry_after)
            if status >= 500:
                raise ReportFailure("status_5xx")
            if status != 200:
                raise ReportFailure("status_4xx")
            body = await response.content.read(PAGE_MAX_BYTES + 1)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise ReportFailure("timeout") from None
    except aiohttp.ClientError:
        raise ReportFailure("unreachable") from None
    if len(body) > PAGE_MAX_BYTES:
        raise ReportFailure("malformed")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ReportFailure("malformed") from None
