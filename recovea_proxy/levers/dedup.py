"""The `dedup` lever: a shareable request joins the flight in progress under its key
(`hit`: it is answered by the shared call, its row says `dedup_singleflight`), or
leads a new one (`miss`: its own upstream call becomes the shared one). See
`flights.py` for what a flight guarantees."""

from __future__ import annotations

from functools import partial

from recovea_proxy.levers.chain import LeverRequest
from recovea_proxy.levers.flights import Flight, FlightRegistry


class DedupLever:
    """Singleflight for one workspace policy (the cache lever sets the key first)."""

    name = "dedup"
    budget_s: float | None = None
    #: nothing that may fail comes after the request is changed
    contained = True

    def __init__(self, flights: FlightRegistry) -> None:
        self._flights = flights

    def applies(self, request: LeverRequest) -> bool:
        return request.cache_key is not None

    def before(self, request: LeverRequest) -> str:
        # The flight the cache lever attached to keep the answer (just before) becomes
        # the shared call when this request leads: one observer of the response, not two.
        flight = request.flight
        if flight is None:  # a chain without the cache lever's flight
            key = request.cache_key
            assert key is not None
            flight = request.flight = Flight(key, request.record)
            request.observers.append(flight)
        flights = self._flights
        subscription = flights.lead_or_join(flight)
        if subscription is None:
            request.release.append(partial(flights.abandon, flight))
            return "miss"
        # A follower: answered by the shared call. Its flight stays an observer of what
        # it receives: kept for the cache by the first follower to finish when the
        # leader's client left (the leader's own answer is then not kept).
        request.answer = subscription
        request.record.dedup_singleflight = True
        request.flight = None
        return "hit"
