"""The bounded in-memory queue between the hot path and the drainer.

`put` is all a request pays: a length check and an append. When the queue is full
the event is dropped and counted; the request never waits. The drainer is woken
when a batch's worth is waiting (otherwise it flushes on its timer).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

#: one queued event: its staging row (`meter.event.STAGING_COLUMNS`)
Item = tuple[Any, ...]


class MeterQueue:
    """Bounded FIFO of finished requests' events."""

    __slots__ = ("_batch", "_items", "_max", "_on_drop", "dropped", "put_total", "wake")

    def __init__(self, maxsize: int, batch: int, on_drop: Callable[[], None]) -> None:
        self._items: deque[Item] = deque()
        self._max = maxsize
        self._batch = batch
        self._on_drop = on_drop
        self.wake = asyncio.Event()
        #: events offered by requests (written + dropped, once drained)
        self.put_total = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        """Queue an event, or drop and count it when the queue is full."""
        self.put_total += 1
        items = self._items
        if len(items) >= self._max:
            self.dropped += 1
            self._on_drop()
            return
        items.append(item)
        if len(items) >= self._batch and not self.wake.is_set():
            self.wake.set()

    def take(self, limit: int) -> list[Item]:
        """Up to `limit` events from the front."""
        items = self._items
        count = min(limit, len(items))
        return [items.popleft() for _ in range(count)]

    def give_back(self, batch: list[Item]) -> None:
        """Return a batch that could be neither written nor spooled to the front."""
        self._items.extendleft(reversed(batch))
