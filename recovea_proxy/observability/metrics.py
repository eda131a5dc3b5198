"""Prometheus metrics of one gateway process, in a registry the app owns.

Labels are bounded: provider, route template (never the raw path), status code,
error kind, fail-open layer and reason. The per-request counts and histograms are
`route_stats`' plain numbers, exported at scrape time; the rest are prometheus-client
metrics, updated off the per-request path.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
)

from recovea_proxy.observability.cache_stats import CacheStats, CacheStatsCollector
from recovea_proxy.observability.connection_stats import REFUSALS
from recovea_proxy.observability.route_stats import RouteStatsCollector


class GatewayMetrics:
    """Every collector the gateway exports on `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.routes = RouteStatsCollector()
        self.registry.register(self.routes)
        self.registry.register(REFUSALS)
        #: the exact cache's and singleflight's counts (plain numbers, read at scrape)
        self.cache = CacheStats()
        self.registry.register(CacheStatsCollector(self.cache))
        # The process's CPU, memory and file descriptors, and its garbage collections.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.in_flight = Gauge(
            "recovea_requests_in_flight",
            "Provider requests currently being served.",
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "recovea_upstream_errors_total",
            "Upstream failures by provider and kind (connect, timeout, reset, ...).",
            ("provider", "kind"),
            registry=self.registry,
        )
        self.fail_open = Counter(
            "gateway_fail_open_total",
            "Faults in a fail-open layer that the request survived, by layer and reason.",
            ("layer", "reason"),
            registry=self.registry,
        )
        self.otel_spans = Counter(
            "recovea_otel_spans_total",
            "OpenTelemetry spans by outcome: exported, or dropped (queue full, or the "
            "collector refused or did not answer; also in gateway_fail_open_total).",
            ("outcome",),
            registry=self.registry,
        )
        self.route_attempts = Counter(
            "recovea_route_attempts_total",
            "Upstream attempts of routed requests, by target provider, model (a price-table "
            "name, else other) and outcome (served, connect, timeout, reset, status_408, "
            "status_429, status_529, status_5xx, error_event, no_key).",
            ("provider", "model", "outcome"),
            registry=self.registry,
        )
        self.unmetered = Counter(
            "recovea_unmetered_requests_total",
            "Requests the provider answered 2xx whose usage the gateway could not read "
            "(their rows hold NULL tokens), by provider and route template.",
            ("provider", "route"),
            registry=self.registry,
        )
        self.client_disconnects = Counter(
            "recovea_client_disconnects_total",
            "Responses the client went away from before their end.",
            ("provider",),
            registry=self.registry,
        )
        self.auth_unavailable = Counter(
            "recovea_auth_unavailable",
            "Provider requests refused 503 auth_unavailable: the key store could not be "
            "reached (or not within RECOVEA_AUTH_TIMEOUT_S) for a key not in memory.",
            registry=self.registry,
        )
        self.meter_events = Counter(
            "meter_events",
            "Metering events by outcome: written to the database, dropped (queue and spool "
            "full), retried (a failed write attempt), spooled (spilled to the spool file), "
            "rejected (refused by the database for its content; set aside in the dead-letter "
            "file), discarded (its workspace was deleted).",
            ("outcome",),
            registry=self.registry,
        )
        self.meter_queue_depth = Gauge(
            "meter_queue_depth", "Events waiting in memory for the drainer.", registry=self.registry
        )
        self.meter_spool_bytes = Gauge(
            "meter_spool_bytes", "Bytes waiting in the metering spool.", registry=self.registry
        )
        self.meter_flush_seconds = Histogram(
            "meter_flush_seconds",
            "Time to write one batch to the database.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.meter_batch_size = Histogram(
            "meter_batch_size",
            "Events per written batch.",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
            registry=self.registry,
        )
        self.provider_key_unavailable = Counter(
            "recovea_provider_key_unavailable_total",
            "Requests refused 503 provider_key_unavailable because their workspace's own "
            "KMS key refused or could not be reached, by reason (disabled, access_denied, "
            "not_found, unreachable, refused).",
            ("reason",),
            registry=self.registry,
        )
        self.workspace_kms_failing = Gauge(
            "recovea_workspace_kms_keys_failing",
            "Workspaces whose own KMS key this process last saw failing, by reason.",
            ("reason",),
            registry=self.registry,
        )
        self.maintenance_runs = Counter(
            "recovea_maintenance_runs",
            "Background maintenance runs (partitions, rollup, prune) by job and outcome.",
            ("job", "outcome"),
            registry=self.registry,
        )
        self.reconcile_runs = Counter(
            "reconcile_runs",
            "Polls of a provider's usage report for one workspace, provider and day, by "
            "outcome: ok (stored), retried (an attempt failed and is tried again), failed "
            "(set aside with its reason after the last attempt).",
            ("outcome",),
            registry=self.registry,
        )
        self.slim_bytes_saved = Counter(
            "gateway_slim_bytes_saved",
            "Request body bytes the slim lever trimmed before the provider, by provider.",
            ("provider",),
            registry=self.registry,
        )
        self.shadow_samples = Counter(
            "recovea_shadow_samples",
            "Shadow evaluation samples by outcome: queued, compared, and why one was "
            "dropped (too_large, incomplete, queue_full, decided, over_ceiling, unpriced, "
            "baseline_failed, unreadable, shutdown, error).",
            ("outcome",),
            registry=self.registry,
        )
        self.shadow_comparisons = Counter(
            "recovea_shadow_comparisons",
            "Shadow comparisons by outcome (agree, disagree) and the comparator that decided "
            "(refusal, finish, tool_calls, json, short, prose).",
            ("outcome", "comparator"),
            registry=self.registry,
        )
        self.shadow_verdicts = Counter(
            "recovea_shadow_verdicts",
            "Verdicts of the shadow non-inferiority test (inferior: the rule was disabled).",
            ("verdict",),
            registry=self.registry,
        )
        self.shadow_spend = Counter(
            "recovea_shadow_spend_usd",
            "USD spent on shadow calls to the baseline model, by provider (not in any cap).",
            ("provider",),
            registry=self.registry,
        )
        self.shadow_queue_depth = Gauge(
            "recovea_shadow_queue_depth",
            "Shadow samples waiting for a worker.",
            registry=self.registry,
        )

        # WebSocket sessions (Realtime, the Responses WebSocket mode); their responses
        # are also counted as requests, one per response, like HTTP ones.
        self.ws_sessions = Counter(
            "gateway_websocket_sessions",
            "WebSocket handshakes by provider, route template and outcome (accepted, refused).",
            ("provider", "route", "outcome"),
            registry=self.registry,
        )
        self.ws_closed = Counter(
            "gateway_websocket_sessions_closed",
            "Accepted WebSocket sessions that ended, by reason (client_closed, "
            "upstream_closed, client_gone, upstream_gone, too_large, shutdown, error).",
            ("provider", "route", "reason"),
            registry=self.registry,
        )
        self.ws_open = Gauge(
            "gateway_websocket_sessions_open",
            "WebSocket sessions being relayed now.",
            ("provider", "route"),
            registry=self.registry,
        )
        self.ws_frames = Counter(
            "gateway_websocket_frames",
            "WebSocket messages relayed, by direction (client_to_upstream, upstream_to_client).",
            ("provider", "route", "direction"),
            registry=self.registry,
        )
        self.ws_bytes = Counter(
            "gateway_websocket_bytes",
            "Payload bytes of the WebSocket messages relayed, by direction.",
            ("provider", "route", "direction"),
            registry=self.registry,
        )

    def count_provider_key_unavailable(self, reason: str) -> None:
        """One request refused because its workspace's own KMS key failed (`reason`);
        off the hot path: refusals only."""
        self.provider_key_unavailable.labels(reason).inc()

    def watch_workspace_keys(self, failing: Callable[[str], int], reasons: tuple[str, ...]) -> None:
        """Export each reason (at 0 until it happens), and read how many workspaces' own
        keys are failing for it at scrape time."""
        for reason in reasons:
            self.provider_key_unavailable.labels(reason)
            self.workspace_kms_failing.labels(reason).set_function(_reader(failing, reason))


def _reader(failing: Callable[[str], int], reason: str) -> Callable[[], float]:
    return lambda: failing(reason)
