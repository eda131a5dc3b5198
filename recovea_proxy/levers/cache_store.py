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

import marshal
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
        return cls(status, headers, chunks, stored_at, entry_size(headers, chunks))

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
    headers: Sequence[tuple[bytes, bytes]], chunks: list[bytes] | tuple[bytes, ...]
) -> int:
    """The bytes the memory store counts for an entry: its packed form (`_pack`: the
    headers and the body, a few bytes of framing each) and 64."""
    return len(_pack(headers, chunks)) + 64


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


#: how the memory store holds an entry until it is first read: expiry (monotonic
#: seconds), status, the headers and the body's chunks as one `marshal` blob (`_pack`),
#: when it was stored, its size. One tuple of a bytes object and numbers, not two
#: dozen small objects (each header pair is three): until the next collection each
#: object a miss leaves behind counts toward it and is walked by it, and held as pairs
#: they made the running gateway's collector and page faults cost every miss ~4 µs
#: (`perf`, bench/README.md), for entries most of which are never read.
_Packed = tuple[float, int, bytes, float, int]
#: ... and once it has been read (a hit): expiry, then the entry's fields in order, so
#: later hits unpack nothing. Both are plain tuples the collector stops tracking once
#: it has seen them (a full cache is not walked by every full collection), and both
#: end with the entry's size.
_Unpacked = tuple[float, int, tuple[tuple[bytes, bytes], ...], tuple[bytes, ...], float, int]
_Held = _Packed | _Unpacked
#: marshal's format version 2: plain tuples, lists and bytes, no back-references (no
#: table of the objects written: the cheapest to write)
_MARSHAL_VERSION = 2


def _pack(headers: Sequence[tuple[bytes, bytes]], chunks: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The headers and the chunks as one bytes object: one C call (`marshal`, of
    this process's own objects, read back only by this process), ~2.5x cheaper than
    joining them and recording their lengths. Never sent anywhere: Redis gets the
    versioned wire form (`CacheEntry.to_bytes`)."""
    # tuple() returns a tuple as it is (aiohttp's headers are one): a copy only for a list
    return marshal.dumps((tuple(headers), chunks), _MARSHAL_VERSION)


def _unpacked(held: _Packed) -> CacheEntry:
    """The entry again, from its packed form."""
    _, status, blob, stored_at, size = held
    headers, chunks = marshal.loads(blob)
    return CacheEntry(status, tuple(headers), tuple(chunks), stored_at, size)


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
        expires = held[0]
        if expires <= time.monotonic():
            self._forget(key)
            return None
        if len(held) == 6:  # read before
            _, status, headers, chunks, stored_at, size = held
            entry = CacheEntry(status, headers, chunks, stored_at, size)
        else:  # its first read: unpacked once, for this hit and the next
            entry = _unpacked(held)
            entries[key] = (
                expires,
                entry.status,
                entry.headers,
                entry.chunks,
                entry.stored_at,
                entry.size,
            )
        entries.move_to_end(key)
        return entry

    def save(self, key: bytes, entry: CacheEntry, ttl_s: int) -> None:
        self.keep(key, entry.status, entry.headers, entry.chunks, ttl_s, entry.stored_at)

    def keep(
        self,
        key: bytes,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        chunks: list[bytes] | tuple[bytes, ...],
        ttl_s: int,
        stored_at: float | None = None,
    ) -> int:
        """Hold an entry given by its parts, packed (`_pack`, inline: every miss whose
        answer is kept passes here); returns the size it counts for (held only when
        within the store's bound). `stored_at`: now, unless the entry is older."""
        # tuple() returns a tuple as it is (aiohttp's headers are one): a copy only for a list
        blob = marshal.dumps((tuple(headers), chunks), _MARSHAL_VERSION)
        size = len(blob) + 64
        if size > self._max:
            return size
        entries = self._entries
        replaced = entries.pop(key, None)
        if replaced is not None:
            self.size -= replaced[-1]
        if stored_at is None:
            stored_at = time.time()
        entries[key] = (time.monotonic() + ttl_s, status, blob, stored_at, size)
        self.size += size
        while self.size > self._max:
            self._forget(next(iter(entries)))
        return size

    def _forget(self, key: bytes) -> None:
        self.size -= self._entries.pop(key)[-1]
