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
        key = request.cache_key
        assert key is not None
        # The flight the cache lever attached to keep the answer (just before) becomes
        # the shared call when this request leads: one observer of the response, not two.
        observers = request.observers
        flight = observers[-1] if observers and type(observers[-1]) is Flight else None
        attach = flight is None or flight.key != key
        if attach:
            flight = Flight(key, request.record)
        assert flight is not None
        flights = self._flights
        subscription = flights.lead_or_join(flight)
        if subscription is not None:
            request.answer = subscription
            request.record.dedup_singleflight = True
            return "hit"
        request.release.append(partial(flights.abandon, flight))
        if attach:
            observers.append(flight)
        request.flight = flight
        return "miss"
