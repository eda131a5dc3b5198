"""What the exact cache and singleflight did, kept as plain numbers where it happens
and turned into Prometheus families only when `/metrics` is scraped (as
`route_stats`): a miss pays an integer addition, not a prometheus-client child's lock.

    recovea_cache_requests_total{outcome}     hit | miss: requests the exact cache acted on
                                              (a miss went upstream or joined a flight)
    recovea_cache_redis_hits_total            the hits Redis answered (memory had nothing)
    recovea_cache_answers_total{outcome}      what became of a missed request's answer:
                                              kept | incomplete | tool_call | too_large | no_store
    recovea_cache_entries, recovea_cache_bytes   this process's memory tier, as it counts
                                              them against RECOVEA_CACHE_MAX_MB
    recovea_cache_evictions_total             entries dropped from memory to make room
    recovea_singleflight_joins_total          requests answered by a flight in progress
    recovea_singleflight_alone_total{reason}  requests that found a flight and called
                                              upstream on their own: waited | failed |
                                              followers | buffer

The pipeline and the scrape both run on the event loop, so a scrape reads a
consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

#: why an answer a miss saw was not kept (`recovea_cache_answers_total`)
NOT_KEPT = ("incomplete", "tool_call", "too_large", "no_store")
#: why a request that found a flight went upstream on its own: the response did not
#: begin within RECOVEA_FLIGHT_FIRST_BYTE_WAIT_S; the shared call failed before its
#: first byte; the flight had RECOVEA_FLIGHT_FOLLOWERS_MAX followers; its response was
#: past RECOVEA_FLIGHT_BUFFER_MAX_KB
ALONE = ("waited", "failed", "followers", "buffer")


class HeldEntries(Protocol):
    """The memory tier, as the scrape reads it."""

    size: int
    evicted: int

    def __len__(self) -> int: ...


class CacheStats:
    """The counts; the cache lever, its keepers and the flight registry add to them."""

    __slots__ = ("alone", "hits", "joins", "kept", "memory", "misses", "not_kept", "redis_hits")

    def __init__(self) -> None:
        self.hits = 0
        self.redis_hits = 0
        self.misses = 0
        self.kept = 0
        self.not_kept = dict.fromkeys(NOT_KEPT, 0)
        self.joins = 0
        self.alone = dict.fromkeys(ALONE, 0)
        #: the memory store, once the lifespan opened it
        self.memory: HeldEntries | None = None


class CacheStatsCollector:
    """A prometheus-client collector over one `CacheStats`."""

    def __init__(self, stats: CacheStats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return self._families(CacheStats())

    def collect(self) -> Iterator[Metric]:
        return self._families(self._stats)

    @staticmethod
    def _families(stats: CacheStats) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "recovea_cache_requests",
            "Requests the exact cache acted on, by outcome (hit, miss).",
            labels=("outcome",),
        )
        requests.add_metric(("hit",), stats.hits)
        requests.add_metric(("miss",), stats.misses)
        yield requests
        yield CounterMetricFamily(
            "recovea_cache_redis_hits",
            "Cache hits answered by Redis (this process's memory had nothing).",
            value=stats.redis_hits,
        )
        answers = CounterMetricFamily(
            "recovea_cache_answers",
            "What became of a missed request's answer: kept, or why not.",
            labels=("outcome",),
        )
        answers.add_metric(("kept",), stats.kept)
        for reason, count in stats.not_kept.items():
            answers.add_metric((reason,), count)
        yield answers
        memory = stats.memory
        yield GaugeMetricFamily(
            "recovea_cache_entries",
            "Entries in this process's memory tier of the exact cache.",
            value=len(memory) if memory is not None else 0,
        )
        yield GaugeMetricFamily(
            "recovea_cache_bytes",
            "Bytes this process's memory tier counts against RECOVEA_CACHE_MAX_MB.",
            value=memory.size if memory is not None else 0,
        )
        yield CounterMetricFamily(
            "recovea_cache_evictions",
            "Entries dropped from the memory tier to make room (least recently used).",
            value=memory.evicted if memory is not None else 0,
        )
        yield CounterMetricFamily(
            "recovea_singleflight_joins",
            "Requests answered by an identical request's call in flight.",
            value=stats.joins,
        )
        alone = CounterMetricFamily(
            "recovea_singleflight_alone",
            "Requests that found a flight and called upstream on their own, by reason.",
            labels=("reason",),
        )
        for reason, count in stats.alone.items():
            alone.add_metric((reason,), count)
        yield alone
