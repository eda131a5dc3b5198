"""Noticing, during a stream, that the client went away, so the upstream is cut at once."""

from __future__ import annotations

import asyncio

from recovea_proxy.asgi import Receive
from recovea_proxy.record import RequestRecord

_WATCH_AFTER_S = 0.05


class DisconnectWatcher:
    """Cancels the streaming task when the client goes away, so the upstream is cut at once.

    The watching task starts only once the stream has lasted `_WATCH_AFTER_S`: a short
    stream ends before a departed client could cost anything, and pays a timer handle
    instead of a task.
    """

    __slots__ = ("_done", "_receive", "_record", "_target", "_task", "_timer")

    def __init__(self, receive: Receive, record: RequestRecord) -> None:
        self._receive = receive
        self._record = record
        self._done = False
        self._target = asyncio.current_task()
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(_WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        if not self._done:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        if not self._done and self._target is not None:
            self._record.client_gone = True
            self._target.cancel()

    def stop(self) -> None:
        """The stream ended by itself: stop watching."""
        self._done = True
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
