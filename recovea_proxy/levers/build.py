"""Which levers a workspace policy turns on, in their fixed order (slim, routing, cache;
the cache lever is also `dedup`). The levers' shared resources (the cache store, the
flight registry) are opened by the lifespan and handed in here."""

from __future__ import annotations

from collections.abc import Callable

from recovea_proxy.config import Settings
from recovea_proxy.levers.cache import CacheLever
from recovea_proxy.levers.cache_store import CacheStore
from recovea_proxy.levers.chain import Lever
from recovea_proxy.levers.flights import FlightRegistry
from recovea_proxy.levers.routing import RoutingLever
from recovea_proxy.levers.slim import SlimLever
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.policy import LeverPolicy


def lever_builder(
    settings: Settings, store: CacheStore, flights: FlightRegistry, metrics: GatewayMetrics
) -> Callable[[LeverPolicy], tuple[Lever, ...]]:
    """The function that builds a policy's levers (called once per distinct policy)."""
    entry_max = int(settings.cache_entry_max_kb * 1024)

    def build(policy: LeverPolicy) -> tuple[Lever, ...]:
        levers: list[Lever] = []
        if policy.slim:
            levers.append(SlimLever(metrics))
        if policy.routing:
            levers.append(RoutingLever())
        if policy.cache != "off":
            levers.append(
                CacheLever(
                    store,
                    flights,
                    policy=policy.cache,
                    ttl_s=policy.cache_ttl_s,
                    entry_max_bytes=entry_max,
                    tool_calls=policy.cache_tool_calls,
                    generation=policy.cache_generation,
                    stats=metrics.cache,
                )
            )
        return tuple(levers)

    return build
