"""Noticing, during a stream, that the client went away, so the upstream is cut at once.

On the gateway's own server the connection says so itself: the watcher leaves a
callback on the request's `http_cycle.GatewayCycle`, which the protocol calls when the
connection is lost. A stream then costs no task and no timer, and a client that
leaves is noticed at once. (A task reading `receive` until `http.disconnect` would
be cancelled at the end of every stream that outlives its start-up delay: a task,
a `CancelledError` and the reference cycles it leaves for the collector, ~60,000
instructions a stream, which a model's stream of seconds always pays.)

Under any other ASGI server (an in-process test transport) that task is the way:
it starts only once the stream has lasted `_WATCH_AFTER_S`, so a short stream pays a
timer handle instead.
"""

from __future__ import annotations

import asyncio

from recovea_proxy.asgi import Receive
from recovea_proxy.http_cycle import GatewayCycle
from recovea_proxy.record import RequestRecord

_WATCH_AFTER_S = 0.05


class DisconnectWatcher:
    """Cancels the streaming task when the client goes away, so the upstream is cut at
    once (made by that task, stopped by it when the stream ends)."""

    __slots__ = ("_cycle", "_done", "_receive", "_record", "_target", "_task", "_timer")

    def __init__(self, receive: Receive, record: RequestRecord) -> None:
        self._receive = receive
        self._record = record
        self._done = False
        self._target = asyncio.current_task()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        cycle = getattr(receive, "__self__", None)
        if isinstance(cycle, GatewayCycle):
            self._cycle: GatewayCycle | None = cycle
            if cycle.disconnected:  # gone before the stream began
                self._gone()
            else:
                cycle.on_disconnect = self._gone
        else:
            self._cycle = None
            self._timer = asyncio.get_running_loop().call_later(_WATCH_AFTER_S, self._start)

    def _gone(self) -> None:
        """The client went away: the streaming task is cancelled."""
        if not self._done and self._target is not None:
            self._record.client_gone = True
            self._target.cancel()

    def _start(self) -> None:
        if not self._done:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        self._gone()

    def stop(self) -> None:
        """The stream ended by itself: stop watching."""
        self._done = True
        if self._cycle is not None:
            self._cycle.on_disconnect = None
            return
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
