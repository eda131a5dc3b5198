"""Which levers a workspace policy turns on, in their fixed order (slim, routing, cache,
dedup). The levers' shared resources (the cache store, the flight registry) are
opened by the lifespan and handed in here."""

from __future__ import annotations

from collections.abc import Callable

from recovea_proxy.levers.chain import Lever
from recovea_proxy.policy import LeverPolicy


def lever_builder() -> Callable[[LeverPolicy], tuple[Lever, ...]]:
    """The function that builds a policy's levers (called once per distinct policy)."""

    def build(policy: LeverPolicy) -> tuple[Lever, ...]:
        return ()

    return build
