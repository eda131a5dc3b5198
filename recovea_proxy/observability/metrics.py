"""Prometheus metrics of one gateway process, in a registry the app owns.

Labels are bounded: provider, route template (never the raw path), status code,
error kind, fail-open layer and reason. Children are looked up once per route and
kept, so a request costs a few `inc`/`observe` calls and no label resolution.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
)


class RouteMetrics:
    """The metric children of one (provider, route) pair."""

    __slots__ = ("_labels", "_requests", "_status", "duration", "overhead")

    def __init__(self, metrics: GatewayMetrics, provider: str, route: str) -> None:
        self._requests = metrics.requests
        self._status: dict[int, Counter] = {}
        self.duration = metrics.duration.labels(provider, route)
        self.overhead = metrics.overhead.labels(provider, route)
        self._labels = (provider, route)

    def count(self, status: int) -> None:
        """Count one finished request with this HTTP status."""
        child = self._status.get(status)
        if child is None:
            child = self._requests.labels(*self._labels, str(status))
            self._status[status] = child
        child.inc()


class GatewayMetrics:
    """Every collector the gateway exports on `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recovea_requests_total",
            "Requests finished, by provider, route template and HTTP status.",
            ("provider", "route", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "recovea_request_duration_seconds",
            "Wall time from request start to the end of the response.",
            ("provider", "route"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "recovea_gateway_overhead_seconds",
            "Time of a request not spent waiting on the provider.",
            ("provider", "route"),
            buckets=_OVERHEAD_BUCKETS,
            registry=self.registry,
        )
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
        self.client_disconnects = Counter(
            "recovea_client_disconnects_total",
            "Responses the client went away from before their end.",
            ("provider",),
            registry=self.registry,
        )
        self.meter_events = Counter(
            "meter_events",
            "Metering events by outcome: written to the database, dropped (queue and spool "
            "full), retried (a failed write attempt), spooled (spilled to the spool file).",
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
        self.maintenance_runs = Counter(
            "recovea_maintenance_runs",
            "Background maintenance runs (partitions, rollup, prune) by job and outcome.",
            ("job", "outcome"),
            registry=self.registry,
        )
        self._routes: dict[tuple[str, str], RouteMetrics] = {}

    def route(self, provider: str, route: str) -> RouteMetrics:
        """The cached children for one (provider, route template)."""
        key = (provider, route)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = RouteMetrics(self, provider, route)
        return found
