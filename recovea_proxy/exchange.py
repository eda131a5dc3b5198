"""One request's exchange with its client: the runtime it runs with, the ASGI
connection (scope, receive, send), its record and its surface. The pipeline's steps
take this one object instead of threading each part through every call."""

from __future__ import annotations

from dataclasses import dataclass

from recovea_proxy.asgi import Receive, Scope, Send
from recovea_proxy.guards.caps import Reservation
from recovea_proxy.guards.limits import Ticket
from recovea_proxy.record import RequestRecord
from recovea_proxy.runtime import Runtime
from recovea_proxy.surfaces import Surface


@dataclass(slots=True)
class Exchange:
    """The client side of one provider request."""

    rt: Runtime
    surface: Surface
    scope: Scope
    receive: Receive
    send: Send
    record: RequestRecord
    #: what the rate and concurrency limits took, settled when the request ends
    ticket: Ticket | None = None
    #: the budget a spend cap reserved for the request (step 3), settled at step 8
    reservation: Reservation | None = None
