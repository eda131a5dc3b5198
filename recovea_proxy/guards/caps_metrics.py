"""What the spend caps count on /metrics. Labels are fixed words (never a workspace,
a key or a model): caps fail closed, so their refusals are counted here by code and
reason, not in `gateway_fail_open_total`.

| metric                           | labels                                       |
| `recovea_cap_reservations_total` | none: requests that reserved budget          |
| `recovea_cap_refusals_total`     | code (`budget_exceeded`,                     |
|                                  | `budget_unverifiable`), reason (`exceeded`,  |
|                                  | `model`, `path`, `state`)                    |
| `recovea_cap_leases_total`       | event (`carved`, `returned`, `sync_failed`)  |
| `recovea_cap_overruns_total`     | action (`finish`: let through and recorded,  |
|                                  | `cut`: the stream was ended)                 |
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class CapMetrics:
    """The caps' counters, their children looked up once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        #: requests that reserved budget: a plain number on the hot path, read at scrape
        self.reservations = 0
        registry.register(_Reservations(self))
        refusals = Counter(
            "recovea_cap_refusals_total",
            "Requests refused by a spend cap, by error code and reason.",
            ("code", "reason"),
            registry=registry,
        )
        leases = Counter(
            "recovea_cap_leases_total",
            "Budget lease events of this process: carved, returned, sync_failed.",
            ("event",),
            registry=registry,
        )
        overruns = Counter(
            "recovea_cap_overruns_total",
            "Requests whose cost passed their reservation with no room left in the cap.",
            ("action",),
            registry=registry,
        )
        self._refusals = {
            reason: refusals.labels(
                "budget_exceeded" if reason == "exceeded" else "budget_unverifiable", reason
            )
            for reason in ("exceeded", "model", "path", "state")
        }
        self._leases = {
            event: leases.labels(event) for event in ("carved", "returned", "sync_failed")
        }
        self._overruns = {action: overruns.labels(action) for action in ("finish", "cut")}

    def reserved(self) -> None:
        self.reservations += 1

    def refused(self, reason: str) -> None:
        self._refusals[reason].inc()

    def lease(self, event: str) -> None:
        self._leases[event].inc()

    def overrun(self, action: str) -> None:
        self._overruns[action].inc()


class _Reservations(Collector):
    """`recovea_cap_reservations_total`, read from the plain count at scrape time."""

    def __init__(self, metrics: CapMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "recovea_cap_reservations",
            "Requests that reserved budget under an enabled spend cap.",
            value=self._metrics.reservations,
        )
