"""Where the exact cache keeps answers: an entry's shape, its wire form, and the
in-process store (an LRU bounded by bytes, each entry until its TTL).

A cached body is the one place the gateway holds a response after the request: only
in memory (this store) or in Redis (`cache_redis.RedisStore`), always with a TTL,
never in Postgres.

Every store answers `get` (this process's memory: never waits), `lookup_shared` (the
store beyond it, when `shared`: awaited by the cache lever only after `get` missed,
bounded by the store itself), `lookup` (both, in that order) and `save` (never
awaited by a request: the store does it off the hot path and owns whatever task that
takes).
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol

from recovea_proxy.headers import NOT_REPLAYED

_MAGIC = b"RCV1"
_COUNT = struct.Struct("!I")
_HEAD = struct.Struct("!dHII")  # stored_at, status, header count, chunk count


@dataclass(slots=True)
class CacheEntry:
    """A stored answer: status, the provider's headers (as they came: those never
    replayed are left out on replay and in the wire form), the body as it came.
    Never changed once made (not frozen: a frozen dataclass's `__init__` costs a miss
    four `object.__setattr__` calls)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    chunks: tuple[bytes, ...]
    #: wall-clock seconds when it was stored (ages are judged against it)
    stored_at: float
    #: bytes the memory store counts for it (its bound): `entry_size`, reckoned once
    size: int

    @classmethod
    def of(
        cls,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        chunks: tuple[bytes, ...],
        stored_at: float,
    ) -> CacheEntry:
        """An entry whose size is reckoned from its parts."""
        return cls(status, headers, chunks, stored_at, entry_size(status, headers, chunks))

    def to_bytes(self) -> bytes:
        """Its wire form (for Redis): versioned, length-prefixed, without the headers
        that are never replayed."""
        headers = [pair for pair in self.headers if pair[0].lower() not in NOT_REPLAYED]
        parts = [
            _MAGIC,
            _HEAD.pack(self.stored_at, self.status, len(headers), len(self.chunks)),
        ]
        for name, value in headers:
            parts += [_COUNT.pack(len(name)), name, _COUNT.pack(len(value)), value]
        for chunk in self.chunks:
            parts += [_COUNT.pack(len(chunk)), chunk]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry:
        """An entry from its wire form; ValueError when the bytes are not one."""
        if data[:4] != _MAGIC:
            raise ValueError("not a cache entry")
        try:
            stored_at, status, header_count, chunk_count = _HEAD.unpack_from(data, 4)
            at = 4 + _HEAD.size
            headers = []
            for _ in range(header_count):
                name, at = _field(data, at)
                value, at = _field(data, at)
                headers.append((name, value))
            chunks = []
            for _ in range(chunk_count):
                chunk, at = _field(data, at)
                chunks.append(chunk)
        except struct.error:
            raise ValueError("a truncated cache entry") from None
        if at != len(data):
            raise ValueError("a cache entry with trailing bytes")
        return cls.of(status, tuple(headers), tuple(chunks), stored_at)


def entry_size(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    chunks: Sequence[bytes],
) -> int:
    """The bytes the memory store counts for an entry (without its key): the body's and
    every header name's and value's bytes, what Python holds each of them in, and
    `_ENTRY_OVERHEAD`. Reckoned in C (`map`, `sum`): every kept answer is counted."""
    return (
        sum(map(len, chunks))
        + sum(map(len, chain.from_iterable(headers)))
        + _PART_OVERHEAD * len(chunks)
        + _PAIR_OVERHEAD * len(headers)
        + _ENTRY_OVERHEAD
    )


def _field(data: bytes, at: int) -> tuple[bytes, int]:
    (length,) = _COUNT.unpack_from(data, at)
    start = at + _COUNT.size
    end = start + length
    if end > len(data):
        raise ValueError("a truncated cache entry")
    return data[start:end], end


class CacheStore(Protocol):
    """Where entries live."""

    #: the longest a lookup may take, timed by the chain (None: it never waits, or it
    #: bounds its own wait, as `cache_redis.RedisStore` does)
    budget_s: float | None
    #: whether there is a store beyond this process's memory (`lookup_shared`)
    shared: bool

    def get(self, key: bytes) -> CacheEntry | None:
        """The fresh entry under `key` in this process's memory, or None."""
        ...

    async def lookup_shared(self, key: bytes) -> CacheEntry | None:
        """The fresh entry under `key` in the store beyond memory, or None."""
        ...

    async def lookup(self, key: bytes) -> CacheEntry | None:
        """The fresh entry under `key`, in memory or beyond, or None."""
        ...

    def save(self, key: bytes, entry: CacheEntry, ttl_s: int) -> None:
        """Keep `entry` for `ttl_s` seconds (done off the request's path)."""
        ...

    def keep(
        self,
        key: bytes,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        chunks: list[bytes],
        ttl_s: int,
    ) -> int | None:
        """`save` an answer from its parts, stored now (a miss's answer as its flight
        kept it); the size memory counts for it, when the store says."""
        ...


#: how the memory store holds an entry until it is first read: one flat tuple of its
#: expiry (monotonic seconds), its size, status, when it was stored, its header count,
#: then each header's name and value, then the body's chunks. The bytes are the ones
#: the answer came in, held, not copied (a `marshal` blob of them cost a miss ~3,700
#: instructions, bench/README.md); one tuple, not one per header: a kept answer leaves
#: the collector one new object, which it stops tracking once it has seen it (the
#: tuple holds only bytes and numbers).
_Flat = tuple[Any, ...]
#: ... and once it has been read (a hit): expiry, size, the entry itself (later hits
#: rebuild nothing)
_Read = tuple[float, int, "CacheEntry"]
_Held = _Flat | _Read
#: where a flat entry's headers begin
_HEADERS_AT = 5
#: what an entry counts for beyond its bytes and its key...
_ENTRY_OVERHEAD = 64
#: ... and for each bytes object of its body (the object's own header)...
_PART_OVERHEAD = 40
#: ... and for each header (its name's and value's objects, and their pair on a hit)
_PAIR_OVERHEAD = 136


def _unflattened(held: _Flat) -> CacheEntry:
    """A flat entry (`_Flat`) as a `CacheEntry`: its first read."""
    _, size, status, stored_at, count = held[:_HEADERS_AT]
    end = _HEADERS_AT + 2 * count
    flat = held[_HEADERS_AT:end]
    headers = tuple(zip(flat[::2], flat[1::2], strict=True))
    return CacheEntry(status, headers, held[end:], stored_at, size)


class MemoryStore:
    """This process's entries, least recently used out first, within `max_bytes`."""

    budget_s: float | None = None
    shared = False

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._entries: OrderedDict[bytes, _Held] = OrderedDict()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def lookup(self, key: bytes) -> CacheEntry | None:
        return self.get(key)

    async def lookup_shared(self, key: bytes) -> CacheEntry | None:
        return None

    def get(self, key: bytes) -> CacheEntry | None:
        entries = self._entries
        held = entries.get(key)
        if held is None:
            return None
        if held[0] <= time.monotonic():
            self._forget(key)
            return None
        entries.move_to_end(key)
        if len(held) == 3:
            entry: CacheEntry = held[2]
            return entry
        # its first read: made an entry once, for this hit and the next
        entry = _unflattened(held)
        entries[key] = (held[0], held[1], entry)
        return entry

    def save(self, key: bytes, entry: CacheEntry, ttl_s: int) -> None:
        self.keep(key, entry.status, entry.headers, entry.chunks, ttl_s, entry.stored_at)

    def keep(
        self,
        key: bytes,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        chunks: Sequence[bytes],
        ttl_s: int,
        stored_at: float | None = None,
    ) -> int:
        """Hold an entry given by its parts, flat (`_Flat`: every miss whose answer is
        kept passes here); returns the size it counts for (held only when it fits the
        store's bound with its key, which may be up to `cache_key.MATERIAL_KEY_MAX`
        bytes). `stored_at`: now, unless the entry is older."""
        if stored_at is None:
            stored_at = time.time()
        size = entry_size(status, headers, chunks)
        counted = size + len(key)
        if counted > self._max:
            return size
        held = (
            time.monotonic() + ttl_s,
            size,
            status,
            stored_at,
            len(headers),
            *chain.from_iterable(headers),
            *chunks,
        )
        entries = self._entries
        before = entries.setdefault(key, held)
        if before is not held:  # an entry under the key already (a concurrent miss kept it)
            self.size -= before[1] + len(key)
            entries[key] = held
            entries.move_to_end(key)
        self.size += counted
        while self.size > self._max:
            self._forget(next(iter(entries)))
        return size

    def _forget(self, key: bytes) -> None:
        self.size -= self._entries.pop(key)[1] + len(key)
