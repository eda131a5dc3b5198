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
| `recovea_cap_fullest_ratio`      | none: the highest (spent + leased) / usd of  |
|                                  | the enabled caps this process last synced    |

The gauge is read at scrape time from what each lease sync brought back (the cap's
state row), so it costs the request path nothing and is as fresh as the last sync
(`RECOVEA_CAP_SYNC_INTERVAL_S` while a cap is in use). It is 0 with no cap, ignores
caps of 0 USD (a block, not a budget running out), and can pass 1 after an overrun.
Replicas each report the caps they spend from: `max()` across them is the fleet's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class CapMetrics:
    """The caps' counters, their children looked up once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        #: requests that reserved budget: a plain number on the hot path, read at scrape
        self.reservations = 0
        registry.register(_Reservations(self))
        #: read at scrape time: the fullest enabled cap (set by the guard, which holds
        #: the caps and the leases; 0 until then)
        self.fullest: Callable[[], float] = lambda: 0.0
        registry.register(_Fullest(self))
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


class _Fullest(Collector):
    """`recovea_cap_fullest_ratio`, asked of the guard at scrape time."""

    def __init__(self, metrics: CapMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "recovea_cap_fullest_ratio",
            "The highest (spent + leased) / usd of the enabled spend caps this process"
            " last synced; 0 with none.",
            value=self._metrics.fullest(),
        )
