"""The hot path's plain-number route stats expose exactly what prometheus-client's own
counter and histograms would for the same requests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.observability.route_stats import LATENCY_BUCKETS, OVERHEAD_BUCKETS

# (provider, route, status, duration s, overhead s); bounds themselves included, since
# an observation equal to a bucket's bound belongs in that bucket
REQUESTS = [
    ("openai", "/v1/chat/completions", 200, 0.02, 0.0003),
    ("openai", "/v1/chat/completions", 200, 0.025, 0.0001),
    ("openai", "/v1/chat/completions", 429, 1.0, 0.00025),
    ("openai", "/v1/chat/completions", 502, 400.0, 0.9),
    ("anthropic", "/v1/messages", 200, 0.0, 0.0),
    ("anthropic", "/v1/messages", 200, 300.0, 0.5),
]


def _samples(text: bytes, names: set[str]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name in names:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def test_route_stats_match_prometheus_client() -> None:
    ours = GatewayMetrics()
    reference = CollectorRegistry()
    requests = Counter(
        "recovea_requests_total", "r", ("provider", "route", "status"), registry=reference
    )
    duration = Histogram(
        "recovea_request_duration_seconds",
        "d",
        ("provider", "route"),
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    overhead = Histogram(
        "recovea_gateway_overhead_seconds",
        "o",
        ("provider", "route"),
        buckets=OVERHEAD_BUCKETS,
        registry=reference,
    )
    for provider, route, status, seconds, spent in REQUESTS:
        ours.routes.route(provider, route).record(status, seconds, spent)
        requests.labels(provider, route, str(status)).inc()
        duration.labels(provider, route).observe(seconds)
        overhead.labels(provider, route).observe(spent)

    names = {"recovea_requests_total"} | {
        f"{base}_{part}"
        for base in ("recovea_request_duration_seconds", "recovea_gateway_overhead_seconds")
        for part in ("bucket", "count", "sum")
    }
    expected = _samples(generate_latest(reference), names)
    got = _samples(generate_latest(ours.registry), names)
    # 4 status series; per route, (buckets + count + sum) for both histograms
    assert len(expected) == 4 + 2 * (len(LATENCY_BUCKETS) + 3 + len(OVERHEAD_BUCKETS) + 3)
    assert got == expected
    assert (
        got[
            (
                "recovea_requests_total",
                frozenset(
                    {("provider", "openai"), ("route", "/v1/chat/completions"), ("status", "200")}
                ),
            )
        ]
        == 2
    )
