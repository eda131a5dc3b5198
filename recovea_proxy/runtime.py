"""The resources one gateway process runs with, opened and closed by the lifespan."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import asyncpg
import structlog

from recovea_proxy.auth import Authenticator
from recovea_proxy.auth.keyring import Keyring, load_keyring
from recovea_proxy.auth.kms_refusals import REASONS
from recovea_proxy.auth.resolver import KeyResolver
from recovea_proxy.auth.workspace_keys import WorkspaceKeys
from recovea_proxy.config import Settings
from recovea_proxy.guards.caps import SpendCaps
from recovea_proxy.guards.caps_config import CapBook
from recovea_proxy.guards.caps_metrics import CapMetrics
from recovea_proxy.guards.leases import LeaseBook
from recovea_proxy.guards.limits import Limiter
from recovea_proxy.guards.limits_setup import open_limits
from recovea_proxy.levers import ChainBook
from recovea_proxy.levers.build import lever_builder
from recovea_proxy.levers.cache_tiers import open_cache_store
from recovea_proxy.levers.flights import FlightRegistry
from recovea_proxy.levers.shadow_store import ShadowStore
from recovea_proxy.levers.shadow_worker import ShadowEvaluator
from recovea_proxy.meter.checkpoints import Checkpointer
from recovea_proxy.meter.dead_letter import DeadLetters
from recovea_proxy.meter.drain import Drainer
from recovea_proxy.meter.event import RouteIds, event_fields, event_row
from recovea_proxy.meter.maintenance import Maintenance
from recovea_proxy.meter.queue import MeterQueue
from recovea_proxy.meter.receipt_keys import PublishedKeys, SigningKey, active_signing_key
from recovea_proxy.meter.receipts import CheckpointSigner, ReceiptSigner
from recovea_proxy.meter.spool import Spool
from recovea_proxy.meter.writer import EventWriter
from recovea_proxy.observability.banner import print_banner, startup_facts
from recovea_proxy.observability.logging import RequestLog
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.observability.otel import SpanExporter
from recovea_proxy.reconcile.schedule import ReconcileSchedule
from recovea_proxy.record import RequestRecord
from recovea_proxy.store.database import app_url, connect, open_pool, owner_url
from recovea_proxy.store.embedded import release as release_embedded
from recovea_proxy.store.migrate import apply_migrations
from recovea_proxy.store.service import ensure_partitions, passthrough_workspace
from recovea_proxy.upstream import UpstreamClient, open_session


@dataclass(slots=True)
class Runtime:
    """Settings plus every long-lived object a request uses."""

    settings: Settings
    metrics: GatewayMetrics
    session: aiohttp.ClientSession
    #: the upstream calls of requests, on `session`
    upstream: UpstreamClient
    auth: Authenticator
    #: the lever chain of each workspace policy
    chains: ChainBook
    #: the shared upstream calls in progress (singleflight)
    flights: FlightRegistry
    upstream_base: dict[str, str]
    pool: asyncpg.Pool
    keyring: Keyring
    log: structlog.typing.FilteringBoundLogger
    request_log: RequestLog
    receipts: ReceiptSigner
    meter: MeterQueue
    routes: RouteIds
    published_keys: PublishedKeys
    #: rate and concurrency limits
    limits: Limiter
    #: shadow evaluation's queue and workers (routing rules with a shadow rate)
    shadow: ShadowEvaluator
    #: the spend caps (step 3 reserves, step 8 settles)
    caps: SpendCaps
    #: OpenTelemetry span export; None (no cost) unless RECOVEA_OTEL_ENDPOINT is set
    otel: SpanExporter | None = None
    ready: bool = False
    #: provider requests being served (read by the in-flight gauge at scrape time)
    in_flight: int = 0

    def finish(self, record: RequestRecord) -> None:
        """Report a finished request: one log line, its metrics, its span (when traces
        are exported), and — for a workspace's request — its ledger row and receipt
        queued for the drainer. A request refused before a workspace was known (401)
        is only counted and logged. A workspace's request whose receipt was not sent
        (the client left, or the body was not SSE) is signed here, so its chain stays
        gapless in the ledger."""
        self.metrics.routes.route(record.provider, record.route).record(
            record.status_code, record.latency_ms / 1000, record.overhead_ms / 1000
        )
        if record.client_gone:
            self.metrics.client_disconnects.labels(record.provider).inc()
        self.request_log.write(event_fields(record))
        if self.otel is not None:
            self.otel.add(record)
        if record.workspace_id is None:
            return
        if record.receipt is None:
            digest = record.response_hash
            self.receipts.sign(record, digest.hexdigest() if digest else _EMPTY_SHA256)
        usage = record.usage
        if (
            usage.input_tokens is None
            and usage.output_tokens is None
            and 200 <= record.status_code < 300
            and not record.cache_hit
        ):
            self.metrics.unmetered.labels(record.provider, record.route).inc()
        self.meter.put(event_row(record, self.routes.id_for(record)))


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: the least time the metering queue is given to flush at shutdown
_FLUSH_MIN_S = 10.0
#: the most time shadow calls in progress are given at shutdown (a cut one loses a
#: sample, nothing else)
_SHADOW_CLOSE_S = 2.0
#: the most time the span queue is given to flush at shutdown
_OTEL_CLOSE_S = 5.0


def _drop_counter(metrics: GatewayMetrics) -> Callable[[], None]:
    dropped = metrics.meter_events.labels("dropped")
    fail_open = metrics.fail_open.labels("meter", "queue_full")

    def count() -> None:
        dropped.inc()
        fail_open.inc()

    return count


async def _close_pool(pool: asyncpg.Pool) -> None:
    await asyncio.wait_for(pool.close(), timeout=10)


async def _open_caps(
    stack: AsyncExitStack,
    settings: Settings,
    metrics: GatewayMetrics,
    pool: asyncpg.Pool,
    listen_url: str,
) -> SpendCaps:
    """The spend caps: every enabled cap loaded (the gateway does not start without
    them), then this process's leases, given back at shutdown."""
    book = CapBook(pool, timeout_s=settings.auth_timeout_s, refresh_s=settings.cap_config_refresh_s)
    await book.start(listen_url)
    stack.push_async_callback(book.close)
    cap_metrics = CapMetrics(metrics.registry)
    leases = LeaseBook(
        pool,
        cap_metrics,
        ttl_s=settings.cap_lease_ttl_s,
        staleness_s=settings.cap_staleness_s,
        sync_interval_s=settings.cap_sync_interval_s,
        check_timeout_s=settings.cap_check_timeout_s,
        fraction=settings.cap_lease_fraction,
    )
    leases.start()
    stack.push_async_callback(leases.close)
    return SpendCaps(
        book, leases, cap_metrics, default_output_tokens=settings.cap_default_output_tokens
    )


def _receipt_signer(
    stack: AsyncExitStack, settings: Settings, key: SigningKey, queue: MeterQueue
) -> ReceiptSigner:
    """The receipt signer: every receipt signed (`each`), or receipts unsigned and chain
    heads signed by the checkpoint task, whose last round runs after the last request
    and before the drainer's final flush (the stack closes in reverse)."""
    if settings.receipt_signing == "each":
        return ReceiptSigner(key)
    signer = CheckpointSigner(key, settings.receipt_checkpoint_every)
    checkpointer = Checkpointer(signer, queue, settings.receipt_checkpoint_ms)
    checkpointer.start()
    stack.push_async_callback(checkpointer.close)
    return signer


@asynccontextmanager
async def open_runtime(settings: Settings, metrics: GatewayMetrics) -> AsyncIterator[Runtime]:
    """Migrate, open the pool, the key resolver and the client session; close them in
    reverse."""
    async with AsyncExitStack() as stack:
        owner = await asyncio.to_thread(owner_url, settings)
        if settings.database_url is None:
            # Last out: stop the embedded server once everything else is closed.
            stack.push_async_callback(release_embedded, settings.data_dir)
        conn = await connect(owner)
        try:
            applied = await apply_migrations(conn)
            await ensure_partitions(conn)
            passthrough_id = await passthrough_workspace(conn) if settings.passthrough else None
        finally:
            await conn.close()
        app = await asyncio.to_thread(app_url, settings)
        pool = await open_pool(app)
        stack.push_async_callback(_close_pool, pool)
        keyring = await asyncio.to_thread(load_keyring, settings)
        async with pool.acquire() as signing_conn:
            signing_key = await active_signing_key(signing_conn, keyring)
        workspace_keys = WorkspaceKeys(
            keyring,
            pool,
            timeout_s=settings.auth_timeout_s,
            on_refused=metrics.count_provider_key_unavailable,
        )
        stack.push_async_callback(workspace_keys.close)
        metrics.watch_workspace_keys(workspace_keys.failing, REASONS)
        resolver = KeyResolver(
            pool,
            keyring,
            ttl_s=settings.key_cache_ttl_s,
            negative_ttl_s=settings.key_negative_ttl_s,
            data_key_ttl_s=settings.data_key_cache_ttl_s,
            data_key_max_uses=settings.data_key_max_uses,
            workspace_keys=workspace_keys,
            workspace_data_key_ttl_s=settings.workspace_data_key_ttl_s,
            timeout_s=settings.auth_timeout_s,
            max_keys=settings.key_cache_max,
            max_refused=settings.key_negative_cache_max,
        )
        await resolver.start(app)
        stack.push_async_callback(resolver.close)
        session = open_session(settings)
        stack.push_async_callback(session.close)
        caps = await _open_caps(stack, settings, metrics, pool, app)
        otel = None
        if settings.otel_endpoint is not None:
            # closed (its queue flushed) before the session it sends on
            otel = SpanExporter(settings, metrics, session)
            otel.start()
            stack.push_async_callback(otel.close, min(settings.otel_timeout_s, _OTEL_CLOSE_S))
        queue = MeterQueue(
            settings.meter_queue_max,
            settings.meter_batch_max,
            _drop_counter(metrics),
        )
        drainer = Drainer(
            queue,
            EventWriter(app),
            Spool(settings.data_dir / "spool", int(settings.meter_spool_max_mb * 1024 * 1024)),
            DeadLetters(
                settings.data_dir / "dead-letter",
                int(settings.meter_dead_letter_max_mb * 1024 * 1024),
            ),
            metrics,
            batch_max=settings.meter_batch_max,
            interval_s=settings.meter_flush_interval_s,
        )
        await drainer.start()
        # The flush gets its own minimum: a grace of 0 stops requests at once, but
        # what they queued is still written (or spooled).
        stack.push_async_callback(drainer.close, max(settings.shutdown_grace_s, _FLUSH_MIN_S))
        signer = _receipt_signer(stack, settings, signing_key, queue)
        # memory alone, or memory in front of Redis (RECOVEA_REDIS_URL)
        cache_store = await stack.enter_async_context(open_cache_store(settings, metrics))
        flights = FlightRegistry(
            buffer_max_bytes=int(settings.flight_buffer_max_kb * 1024),
            followers_max=settings.flight_followers_max,
            stats=metrics.cache,
        )
        stack.push_async_callback(flights.close)
        limits = await stack.enter_async_context(open_limits(settings, metrics, pool, app))
        published = PublishedKeys(pool)
        await published.reload()
        maintenance = Maintenance(
            owner,
            metrics,
            interval_s=settings.maintenance_interval_s,
            timeout_s=settings.maintenance_timeout_s,
            max_tags=settings.rollup_max_tags,
            signer=signer,
            pool=pool,
            keyring=keyring,
            published=published,
        )
        maintenance.start()
        stack.push_async_callback(maintenance.close)
        auth = Authenticator(
            passthrough=settings.passthrough,
            resolver=resolver,
            passthrough_workspace_id=passthrough_id or "",
        )
        # Closed before the session and the pool it uses (the stack runs in reverse).
        shadow = ShadowEvaluator(settings, metrics, session, ShadowStore(pool), auth.forget_key)
        shadow.start()
        stack.push_async_callback(shadow.close, min(settings.shutdown_grace_s, _SHADOW_CLOSE_S))
        if settings.reconcile_interval_s > 0:
            reconciling = ReconcileSchedule(owner, settings, keyring, metrics)
            reconciling.start()
            stack.push_async_callback(reconciling.close)
        runtime = Runtime(
            settings=settings,
            metrics=metrics,
            session=session,
            upstream=UpstreamClient(session),
            auth=auth,
            chains=ChainBook(lever_builder(settings, cache_store, flights, metrics), metrics),
            flights=flights,
            pool=pool,
            keyring=keyring,
            upstream_base={
                name: settings.upstream_for(name) for name in ("openai", "anthropic", "openrouter")
            },
            log=structlog.get_logger("recovea"),
            request_log=RequestLog(settings.log_format),
            receipts=signer,
            meter=queue,
            routes=RouteIds(),
            published_keys=published,
            limits=limits,
            shadow=shadow,
            caps=caps,
            otel=otel,
        )
        metrics.in_flight.set_function(lambda: runtime.in_flight)
        started = time.monotonic()
        runtime.ready = True
        facts = startup_facts(settings, runtime.upstream_base)
        if settings.log_format == "console":
            print_banner(facts)  # the same facts, as lines a person reads
            runtime.log.debug("gateway_started", migrations_applied=applied, **facts)
        else:
            runtime.log.info("gateway_started", migrations_applied=applied, **facts)
        stack.callback(runtime.request_log.flush)
        try:
            yield runtime
        finally:
            runtime.ready = False
            runtime.log.info("gateway_stopping", uptime_s=round(time.monotonic() - started, 1))
