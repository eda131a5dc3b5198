"""The `dedup` lever: a shareable request joins the flight in progress under its key
(`hit`: it is answered by the shared call, its row says `dedup_singleflight`), or
leads a new one (`miss`: its own upstream call becomes the shared one). See
`flights.py` for what a flight guarantees."""

from __future__ import annotations

from functools import partial

from recovea_proxy.levers.cache import CacheRecorder
from recovea_proxy.levers.chain import LeverRequest
from recovea_proxy.levers.flights import FlightRegistry


class DedupLever:
    """Singleflight for one workspace policy (the cache lever sets the key first)."""

    name = "dedup"
    budget_s: float | None = None

    def __init__(self, flights: FlightRegistry) -> None:
        self._flights = flights

    def applies(self, request: LeverRequest) -> bool:
        return request.cache_key is not None

    async def before(self, request: LeverRequest) -> str:
        key = request.cache_key
        assert key is not None
        subscription = self._flights.join(key)
        if subscription is None:
            flights = self._flights
            observers = request.observers
            # The cache's recorder (attached just before) reads the flight's buffer
            # instead of being fed every chunk itself: the flight observes the response.
            recorder = observers[-1] if observers and type(observers[-1]) is CacheRecorder else None
            flight = request.flight = flights.open(key, request.record, recorder)
            if recorder is None:
                observers.append(flight)
            else:
                observers[-1] = flight
            request.release.append(partial(flights.abandon, flight))
            return "miss"
        request.answer = subscription
        request.record.dedup_singleflight = True
        return "hit"
