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
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from recovea_proxy.header_check import holds_refused_byte, holds_refused_name_byte
from recovea_proxy.headers import NOT_REPLAYED
from recovea_proxy.sources import ReplayPlan

_MAGIC = b"RCV1"
_COUNT = struct.Struct("!I")
_HEAD = struct.Struct("!dHII")  # stored_at, status, header count, chunk count


@dataclass(slots=True)
class CacheEntry:
    """A stored answer: status, the provider's headers (as they came: those never
    replayed are left out on replay and in the wire form; an entry the memory store
    hands out holds only its plan's, the replay's form), the body as it came. Never
    changed once made (not frozen: a frozen dataclass's `__init__` costs a miss four
    `object.__setattr__` calls), but for `plan`: what its replays share (made when the
    memory store first reads the entry, which then hands every hit the same object;
    by the cache lever for an entry read from Redis)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    chunks: tuple[bytes, ...]
    #: wall-clock seconds when it was stored (ages are judged against it)
    stored_at: float
    #: bytes the memory store counts for it (its bound): `entry_size`, reckoned once;
    #: more once the store has read it (`_unpacked_size`). Not part of what it is.
    size: int = field(compare=False)
    plan: ReplayPlan | None = field(default=None, compare=False, repr=False)

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
        _check_replayable(status, headers, stored_at)
        return cls.of(status, tuple(headers), tuple(chunks), stored_at)


def _check_replayable(status: int, headers: list[tuple[bytes, bytes]], stored_at: float) -> None:
    """Raise ValueError unless an entry read from its wire form is one this gateway
    could have stored, so that replaying it cannot break the client's response: a 200
    (the only status kept), stored at a real time (an age is reckoned from it), its
    headers fit to write (uvicorn's rules for names and values) and its body as it
    came (identity: the replay says so)."""
    if status != 200:
        raise ValueError("a cache entry of a status never kept")
    if not math.isfinite(stored_at):
        raise ValueError("a cache entry stored at no real time")
    for name, value in headers:
        if not name or holds_refused_name_byte(name) or holds_refused_byte(value):
            raise ValueError("a cache entry with a header that cannot be written")
        if name.lower() == b"content-encoding" and value.strip().lower() != b"identity":
            raise ValueError("a cache entry of an encoded body")


def entry_size(
    status: int, headers: Sequence[tuple[bytes, bytes]], chunks: list[bytes] | tuple[bytes, ...]
) -> int:
    """The bytes the memory store counts for an entry (without its key): its packed
    form (`_pack`: the headers and the body, a few bytes of framing each, and three
    numbers) and `_ENTRY_OVERHEAD`."""
    return len(_pack(0.0, 0.0, status, headers, chunks)) + _ENTRY_OVERHEAD


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

    def holds(self, key: bytes) -> bool:
        """Whether this process's memory holds an entry under `key` (fresh or not)."""
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


#: how the memory store holds an entry until it is first read: one bytes object, the
#: `marshal` of (expiry in monotonic seconds, when it was stored, status, the headers,
#: the body's chunks); its size is its length (`_held_size`). One object an entry, not
#: five: less for the allocator and the collector to hold for answers most of which are
#: never read (a saving too small for the CPU-time bench to show, bench/README.md).
_Packed = bytes
#: ... and once it has been read (a hit): its expiry and the entry, so later hits
#: unpack nothing and share the entry's `plan`.
_Unpacked = tuple[float, CacheEntry]
_Held = _Packed | _Unpacked
#: marshal's format version 2: plain tuples, lists and bytes, no back-references (no
#: table of the objects written: the cheapest to write)
_MARSHAL_VERSION = 2
#: what an entry counts for beyond its packed bytes (and its key)
_ENTRY_OVERHEAD = 64


def _pack(
    expires: float,
    stored_at: float,
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    chunks: list[bytes] | tuple[bytes, ...],
) -> bytes:
    """An entry as one bytes object (`_Packed`): one C call (`marshal`, of this
    process's own objects, read back only by this process), ~2.5x cheaper than joining
    the parts and recording their lengths. Never sent anywhere: Redis gets the
    versioned wire form (`CacheEntry.to_bytes`)."""
    # marshal takes the tuple or list of pairs every caller gives (aiohttp's headers
    # are a tuple): no copy to a tuple first
    return marshal.dumps((expires, stored_at, status, headers, chunks), _MARSHAL_VERSION)  # type: ignore[arg-type]


#: what an entry once read holds beyond its packed bytes, per header and per chunk:
#: each as Python objects (a pair's tuple, two bytes objects; a chunk's bytes object),
#: and the header lists its plan works out for the response (a pair's tuple each)...
_UNPACKED_PER_HEADER = 250
_UNPACKED_PER_CHUNK = 40
#: ... and the entry, its plan and the usage it learns
_UNPACKED_FIXED = 400


def _unpacked_size(packed: int, plan: ReplayPlan, chunks: tuple[bytes, ...]) -> int:
    """The size an entry counts for once it has been read (without its key): its
    unpacked objects and its plan's, so that hit entries stay within the bound too
    (tracemalloc puts a JSON answer with nine headers at ~4.1 KB read, ~0.9 KB packed)."""
    return (
        packed
        + _ENTRY_OVERHEAD
        + _UNPACKED_FIXED
        + _UNPACKED_PER_HEADER * len(plan.headers)
        + _UNPACKED_PER_CHUNK * len(chunks)
        + sum(len(value) for _, value in plan.headers)
    )


def _held_size(held: _Held) -> int:
    """The size an entry counts for (without its key)."""
    return len(held) + _ENTRY_OVERHEAD if isinstance(held, bytes) else held[1].size


class MemoryStore:
    """This process's entries, least recently used out first, within `max_bytes`."""

    budget_s: float | None = None
    shared = False

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._entries: OrderedDict[bytes, _Held] = OrderedDict()
        self.size = 0
        #: entries dropped to make room (`recovea_cache_evictions_total`)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, key: bytes) -> bool:
        """Whether an entry is held under `key` (fresh or not)."""
        return key in self._entries

    async def lookup(self, key: bytes) -> CacheEntry | None:
        return self.get(key)

    async def lookup_shared(self, key: bytes) -> CacheEntry | None:
        return None

    def get(self, key: bytes) -> CacheEntry | None:
        entries = self._entries
        held = entries.get(key)
        if held is None:
            return None
        entry: CacheEntry | None = None
        if isinstance(held, bytes):  # its first read: unpacked once, for this hit and the next
            expires, stored_at, status, headers, chunks = marshal.loads(held)
        else:
            expires, entry = held
        if expires <= time.monotonic():
            self._forget(key)
            return None
        entries.move_to_end(key)
        if entry is None:
            # The replay's form of the headers is all a hit needs: held instead of them.
            plan = ReplayPlan(headers)
            chunks = tuple(chunks)
            size = _unpacked_size(len(held), plan, chunks)
            entry = CacheEntry(status, plan.headers, chunks, stored_at, size, plan)
            entries[key] = (expires, entry)
            self.size += size - _held_size(held)
            self._make_room()
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
        """Hold an entry given by its parts, packed (`_pack`: every miss whose answer
        is kept passes here); returns the size it counts for (held only when
        it fits the store's bound with its key, which may be up to
        `cache_key.MATERIAL_KEY_MAX` bytes). `stored_at`: now, unless the entry is older."""
        if stored_at is None:
            stored_at = time.time()
        packed = _pack(time.monotonic() + ttl_s, stored_at, status, headers, chunks)
        size = len(packed) + _ENTRY_OVERHEAD
        counted = size + len(key)
        if counted > self._max:
            return size
        entries = self._entries
        held = entries.setdefault(key, packed)
        if held is not packed:  # an entry under the key already (a concurrent miss kept it)
            self.size -= _held_size(held) + len(key)
            entries[key] = packed
            entries.move_to_end(key)
        self.size += counted
        self._make_room()
        return size

    def _make_room(self) -> None:
        """Drop the least recently used entries while the store is past its bound."""
        entries = self._entries
        while self.size > self._max and entries:
            self._forget(next(iter(entries)))
            self.evicted += 1

    def _forget(self, key: bytes) -> None:
        self.size -= _held_size(self._entries.pop(key)) + len(key)
