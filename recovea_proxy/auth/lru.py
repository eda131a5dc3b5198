"""A bounded map whose entries expire: the key resolver's memory of what it looked up.

An entry lives until its expiry time passes or until `max_entries` more recently
used entries push it out, least recently used first. Every operation is O(1): a
lookup is one dict lookup plus a move to the end of the order (an OrderedDict is a
dict with a linked list beside it, both in C). Expired entries stay until they are
replaced, or dropped from the oldest end when something is added, so a flood of
one-off entries costs memory up to `max_entries` and no more, and every value that
leaves (other than by `pop` or `clear`) is handed back to the caller of `put`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringLru(Generic[K, V]):
    """At most `max_entries` values, each until its own expiry (monotonic seconds)."""

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> V | None:
        """The value while it is fresh (and mark it used); None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, expires: float, now: float) -> list[V]:
        """Hold `value` until `expires`; the values that left to make room or because
        they expired (a replaced value is not among them), so the caller can forget
        what it keeps beside them."""
        entries = self._entries
        entries[key] = (expires, value)
        entries.move_to_end(key)
        dropped: list[V] = []
        while len(entries) > self._max:
            dropped.append(entries.popitem(last=False)[1][1])
        while entries:
            oldest = next(iter(entries.values()))
            if oldest[0] > now:
                break
            dropped.append(entries.popitem(last=False)[1][1])
        return dropped

    def pop(self, key: K) -> V | None:
        """Forget `key`; its value if it was held (fresh or not)."""
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        self._entries.clear()
