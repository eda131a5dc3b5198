"""What the HTTP protocol refused before a request reached the app, counted as plain
numbers and exported at scrape time as `recovea_connections_refused_total{reason}`.

The protocol (`recovea_proxy.http_protocol`) is built by uvicorn, once per
connection, with no handle on the app's metrics; both live in the same worker
process, so the counts are this process's `REFUSALS`, which the app's registry
reads when `/metrics` is scraped (each worker reports its own, like every metric).

| reason | what was refused |
| --- | --- |
| `headers_too_large` | too many or too large request headers (431) |
| `header_timeout` | a connection whose request headers did not arrive in time (closed) |
| `body_timeout` | a request body that stalled (408) |
| `invalid_request` | bytes the HTTP parser refused (400) |
| `too_many_connections` | a connection over `RECOVEA_MAX_CONNECTIONS` (closed at once) |
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

REASONS = (
    "headers_too_large",
    "header_timeout",
    "body_timeout",
    "invalid_request",
    "too_many_connections",
)


class ConnectionRefusals:
    """Refusal counts by reason (a Prometheus collector of them)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = dict.fromkeys(REASONS, 0)

    def count(self, reason: str) -> None:
        """One more refusal for `reason` (one of `REASONS`)."""
        self.counts[reason] += 1

    def describe(self) -> Iterator[Metric]:
        """The family this collector exports (for the registry's name check)."""
        yield CounterMetricFamily(
            "recovea_connections_refused", _HELP, labels=("reason",)
        )

    def collect(self) -> Iterator[Metric]:
        """The counts so far."""
        family = CounterMetricFamily("recovea_connections_refused", _HELP, labels=("reason",))
        for reason, count in self.counts.items():
            family.add_metric([reason], count)
        yield family


_HELP = (
    "Connections or requests the HTTP protocol refused before the app saw them, by "
    "reason (headers_too_large, header_timeout, body_timeout, invalid_request, "
    "too_many_connections)."
)

#: this process's counts (see the module docstring for why they are process-wide)
REFUSALS = ConnectionRefusals()
