"""The limits' metrics: decisions as plain numbers read at scrape time (the hot path
adds to a list), lease traffic and faults as prometheus-client counters.

| metric                                | labels                                        |
| `recovea_rate_limit_decisions_total`  | kind (requests, tokens, concurrency), scope   |
|                                       | (workspace, project, team, key), outcome      |
|                                       | (admitted, refused)                           |
| `recovea_rate_limit_leases_total`     | outcome (granted, refused, returned); Redis   |
| `gateway_fail_open_total{layer="ratelimit"}` | reason: timeout, unreachable, error,   |
|                                       | down (a request admitted unchecked),          |
|                                       | config_unavailable (a failed read of limits)  |
| `recovea_rate_limit_unverifiable_total` | reason: fail-closed limits refused unchecked |
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from recovea_proxy.guards.limit_redis import REASONS
from recovea_proxy.guards.limit_rules import KINDS, SCOPES
from recovea_proxy.observability.metrics import GatewayMetrics

ADMITTED = 0
REFUSED = 1


class Decisions(Collector):
    """Admissions and refusals per (kind, scope): `tallies[scope][kind index * 2 + outcome]`."""

    def __init__(self) -> None:
        self.tallies: dict[str, list[int]] = {scope: [0] * (2 * len(KINDS)) for scope in SCOPES}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "recovea_rate_limit_decisions",
            "Rate and concurrency limit decisions, by kind of limit, scope and outcome.",
            labels=("kind", "scope", "outcome"),
        )
        for scope, tally in self.tallies.items():
            for index, kind in enumerate(KINDS):
                family.add_metric((kind, scope, "admitted"), tally[2 * index + ADMITTED])
                family.add_metric((kind, scope, "refused"), tally[2 * index + REFUSED])
        yield family


class LimitMetrics:
    """Every limit metric of one process, registered on the gateway's registry."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.decisions = Decisions()
        metrics.registry.register(self.decisions)
        leases = Counter(
            "recovea_rate_limit_leases",
            "Lease exchanges with Redis for the shared rate-limit buckets, by outcome.",
            ("outcome",),
            registry=metrics.registry,
        )
        self._leases = {o: leases.labels(o) for o in ("granted", "refused", "returned")}
        unverifiable = Counter(
            "recovea_rate_limit_unverifiable",
            "Requests refused by a fail-closed limit whose counters could not be reached.",
            ("reason",),
            registry=metrics.registry,
        )
        self._unverifiable = {r: unverifiable.labels(r) for r in REASONS}
        self._fail_open = {
            r: metrics.fail_open.labels("ratelimit", r) for r in (*REASONS, "config_unavailable")
        }

    def lease(self, outcome: str) -> None:
        self._leases[outcome].inc()

    def failed_open(self, reason: str) -> None:
        self._fail_open[reason].inc()

    def failed_closed(self, reason: str) -> None:
        self._unverifiable[reason].inc()

    def config_unavailable(self) -> None:
        self._fail_open["config_unavailable"].inc()
