"""Per-route request counts and latency histograms, kept as plain numbers on the hot
path and turned into Prometheus families only when `/metrics` is scraped.

A finished request costs one `RouteStats.record` call: a dict increment, two bucket
searches and four additions, where prometheus-client's own children take a lock and
walk their buckets on every `inc`/`observe`. The exposition is the same as theirs:
`recovea_requests_total{provider,route,status}` and the
`recovea_request_duration_seconds` / `recovea_gateway_overhead_seconds` histograms by
provider and route. The request pipeline and the scrape both run on the event loop,
so a scrape reads a consistent snapshot.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class RouteStats:
    """The counts of one (provider, route template) pair."""

    __slots__ = ("duration", "duration_sum", "labels", "overhead", "overhead_sum", "statuses")

    def __init__(self, provider: str, route: str) -> None:
        self.labels = (provider, route)
        self.statuses: dict[int, int] = {}
        # one slot per bucket (observations <= its bound, not cumulative), then +Inf
        self.duration = [0] * (len(LATENCY_BUCKETS) + 1)
        self.overhead = [0] * (len(OVERHEAD_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.overhead_sum = 0.0

    def record(self, status: int, duration_s: float, overhead_s: float) -> None:
        """Count one finished request."""
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.duration[bisect_left(LATENCY_BUCKETS, duration_s)] += 1
        self.duration_sum += duration_s
        self.overhead[bisect_left(OVERHEAD_BUCKETS, overhead_s)] += 1
        self.overhead_sum += overhead_s


class RouteStatsCollector:
    """A prometheus-client collector over every route's `RouteStats`."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], RouteStats] = {}

    def route(self, provider: str, route: str) -> RouteStats:
        """The stats of one (provider, route template), created on first use."""
        key = (provider, route)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = RouteStats(provider, route)
        return found

    def describe(self) -> Iterator[Metric]:
        """The families this collector exports (for the registry's name check)."""
        return self._families()

    def collect(self) -> Iterator[Metric]:
        """The current counts, as Prometheus families."""
        return self._families(list(self._routes.values()))

    @staticmethod
    def _families(routes: Sequence[RouteStats] = ()) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "recovea_requests",
            "Requests finished, by provider, route template and HTTP status.",
            labels=("provider", "route", "status"),
        )
        duration = HistogramMetricFamily(
            "recovea_request_duration_seconds",
            "Wall time from request start to the end of the response.",
            labels=("provider", "route"),
        )
        overhead = HistogramMetricFamily(
            "recovea_gateway_overhead_seconds",
            "Time of a request not spent waiting on the provider.",
            labels=("provider", "route"),
        )
        for stats in routes:
            for status, count in sorted(stats.statuses.items()):
                requests.add_metric([*stats.labels, str(status)], count)
            duration.add_metric(
                list(stats.labels), _cumulative(LATENCY_BUCKETS, stats.duration), stats.duration_sum
            )
            overhead.add_metric(
                list(stats.labels),
                _cumulative(OVERHEAD_BUCKETS, stats.overhead),
                stats.overhead_sum,
            )
        yield requests
        yield duration
        yield overhead


def _cumulative(bounds: Sequence[float], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus's cumulative `le` buckets, +Inf last."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*(_le(b) for b in bounds), "+Inf"), counts, strict=True):
        total += count
        out.append((bound, total))
    return out


def _le(bound: float) -> str:
    """A bucket bound as prometheus-client writes it (1 -> "1.0")."""
    return repr(float(bound))
