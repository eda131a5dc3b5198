"""Opening the limits for a gateway's lifespan: the limiter, its Redis leases (with
`RECOVEA_REDIS_URL`), and the book that keeps its limits current."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from recovea_proxy.config import Settings
from recovea_proxy.guards.limit_book import LimitBook
from recovea_proxy.guards.limit_metrics import LimitMetrics
from recovea_proxy.guards.limit_redis import RedisLeases
from recovea_proxy.guards.limits import Limiter
from recovea_proxy.observability.metrics import GatewayMetrics


@asynccontextmanager
async def open_limits(
    settings: Settings, metrics: GatewayMetrics, pool: asyncpg.Pool, listen_url: str
) -> AsyncIterator[Limiter]:
    """The limiter, with every limit read and the listener on; closed in reverse."""
    limit_metrics = LimitMetrics(metrics)
    leases = None
    if settings.redis_url is not None:
        leases = RedisLeases(
            settings.redis_url,
            timeout_s=settings.limit_redis_timeout_ms / 1000,
            count=limit_metrics.lease,
        )
    limiter = Limiter(
        limit_metrics,
        window_s=settings.limit_window_s,
        default_max_tokens=settings.limit_default_max_tokens,
        leases=leases,
        lease_s=settings.limit_lease_s,
        lease_share=settings.limit_lease_share,
    )
    book = LimitBook(
        pool,
        limiter.install,
        refresh_s=settings.limits_refresh_s,
        on_failure=limit_metrics.config_unavailable,
    )
    limiter.book = book
    limiter.start()
    try:
        await book.start(listen_url)
        yield limiter
    finally:
        await book.close()
        await limiter.close()
