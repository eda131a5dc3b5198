"""The resources one gateway process runs with, opened and closed by the lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import structlog

from recovea_proxy.auth import Authenticator
from recovea_proxy.config import Settings
from recovea_proxy.levers import Lever, build_chain
from recovea_proxy.meter.event import event_fields
from recovea_proxy.observability.logging import RequestLog
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.record import RequestRecord
from recovea_proxy.upstream import open_session


@dataclass(slots=True)
class Runtime:
    """Settings plus every long-lived object a request uses."""

    settings: Settings
    metrics: GatewayMetrics
    session: aiohttp.ClientSession
    auth: Authenticator
    levers: tuple[Lever, ...]
    upstream_base: dict[str, str]
    log: structlog.typing.FilteringBoundLogger
    request_log: RequestLog
    ready: bool = False
    #: provider requests being served (read by the in-flight gauge at scrape time)
    in_flight: int = 0

    def finish(self, record: RequestRecord) -> None:
        """Report a finished request: one log line and its metrics."""
        route = self.metrics.route(record.provider, record.route)
        route.count(record.status_code)
        route.duration.observe(record.latency_ms / 1000)
        route.overhead.observe(record.overhead_ms / 1000)
        if record.client_gone:
            self.metrics.client_disconnects.labels(record.provider).inc()
        self.request_log.write(event_fields(record))


@asynccontextmanager
async def open_runtime(settings: Settings, metrics: GatewayMetrics) -> AsyncIterator[Runtime]:
    """Open the client session (and, later, the pool and meter); close them in reverse."""
    async with AsyncExitStack() as stack:
        session = open_session(settings)
        stack.push_async_callback(session.close)
        runtime = Runtime(
            settings=settings,
            metrics=metrics,
            session=session,
            auth=Authenticator(passthrough=settings.passthrough),
            levers=build_chain(),
            upstream_base={
                name: settings.upstream_for(name) for name in ("openai", "anthropic", "openrouter")
            },
            log=structlog.get_logger("recovea"),
            request_log=RequestLog(settings.log_format),
        )
        metrics.in_flight.set_function(lambda: runtime.in_flight)
        started = time.monotonic()
        runtime.ready = True
        runtime.log.info(
            "gateway_started",
            passthrough=settings.passthrough,
            upstreams=runtime.upstream_base,
        )
        stack.callback(runtime.request_log.flush)
        try:
            yield runtime
        finally:
            runtime.ready = False
            runtime.log.info("gateway_stopping", uptime_s=round(time.monotonic() - started, 1))
