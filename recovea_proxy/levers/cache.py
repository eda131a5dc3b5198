"""The exact cache: a shareable request (`cache_key`) is answered from a stored answer
when there is a fresh one, and a miss's answer is recorded for the next time.

Per request, `X-Recovea-Cache: skip` neither reads nor writes (nor joins a flight),
`refresh` does not read but writes, and `Cache-Control: max-age=N` caps the age of
an entry the request accepts. A hit replays the stored bytes as they first came —
JSON, or a stream event for event — and the row says `cache_hit`, `cache_type =
exact`, with the original's usage (read again from the replayed bytes).

Stored only: a 200 answer, complete (a terminal event, `success`), whose finish
reason is not `length` or `content_filter`, not a tool call unless the workspace
allows them, and not larger than `RECOVEA_CACHE_ENTRY_MAX_KB`. Partial streams never.
"""

from __future__ import annotations

import time

from recovea_proxy.headers import HOP_BY_HOP
from recovea_proxy.levers.cache_key import key_of, shareable
from recovea_proxy.levers.cache_store import CacheEntry, CacheStore
from recovea_proxy.levers.chain import LeverRequest
from recovea_proxy.record import RequestRecord
from recovea_proxy.sources import Headers, ReplaySource, ResponseSource

#: finish reasons of answers that are not kept (cut short, filtered)
_INCOMPLETE = frozenset({"length", "content_filter", "max_tokens", "refusal"})
#: finish reasons of tool calls (kept only when the workspace allows them)
_TOOL_CALLS = frozenset({"tool_calls", "function_call", "tool_use"})
#: response headers never stored: hop-by-hop, per-connection or per-client
_NOT_STORED = HOP_BY_HOP | {b"content-length", b"set-cookie", b"date"}


class CacheLever:
    """The `cache` lever of one workspace policy."""

    name = "cache"

    def __init__(
        self, store: CacheStore, *, ttl_s: int, entry_max_bytes: int, tool_calls: bool
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._entry_max = entry_max_bytes
        self._tool_calls = tool_calls
        self.budget_s = store.budget_s

    def applies(self, request: LeverRequest) -> bool:
        parsed = request.parsed
        return (
            parsed is not None
            and request.record.method == "POST"
            and request.headers.cache != "skip"
            and shareable(parsed, request.policy.cache)
        )

    async def before(self, request: LeverRequest) -> str:
        parsed = request.parsed
        record = request.record
        assert parsed is not None and record.workspace_id is not None
        mode = request.headers.cache
        key = key_of(
            record.workspace_id,
            record.method,
            request.surface.provider.name,
            request.surface.upstream_path,
            parsed,
            request.plan.key if request.plan is not None else b"",
        )
        request.cache_key = key
        if mode != "refresh":
            entry = await self._store.lookup(key)
            if entry is not None and _fresh_enough(entry, request):
                request.answer = ReplaySource(entry.status, entry.headers, entry.chunks)
                record.cache_hit = True
                record.cache_type = "exact"
                return "hit"
        request.observers.append(
            CacheRecorder(self._store, key, self._ttl, record, self._entry_max, self._tool_calls)
        )
        return "miss"


def _fresh_enough(entry: CacheEntry, request: LeverRequest) -> bool:
    """Whether the entry is no older than the request's `Cache-Control: max-age`."""
    for name, value in request.headers.forward:
        if name == "cache-control":
            for directive in value.split(","):
                field, _, number = directive.strip().partition("=")
                if field.lower() == "max-age" and number.strip().isdecimal():
                    return time.time() - entry.stored_at <= int(number)
    return True


class CacheRecorder:
    """Keeps a missed request's answer as it passes, and stores it if it qualifies."""

    __slots__ = (
        "_chunks",
        "_headers",
        "_key",
        "_max",
        "_off",
        "_record",
        "_size",
        "_status",
        "_store",
        "_tool_calls",
        "_ttl",
    )

    def __init__(
        self,
        store: CacheStore,
        key: bytes,
        ttl_s: int,
        record: RequestRecord,
        max_bytes: int,
        tool_calls: bool,
    ) -> None:
        self._store = store
        self._key = key
        self._ttl = ttl_s
        self._record = record
        self._max = max_bytes
        self._tool_calls = tool_calls
        self._chunks: list[bytes] = []
        self._size = 0
        self._status = 0
        self._headers: Headers = ()
        self._off = False

    def begin(self, source: ResponseSource) -> None:
        self._status = source.status
        if source.status != 200 or not source.identity_encoded:
            self._off = True
            return
        self._headers = source.raw_headers  # filtered when stored

    def feed(self, chunk: bytes) -> None:
        if self._off:
            return
        self._size += len(chunk)
        if self._size > self._max:
            self._off = True
            self._chunks = []
            return
        self._chunks.append(chunk)

    def take(self, chunks: list[bytes], size: int) -> None:
        """The whole answer, kept by the flight this request leads (which then feeds
        no chunk here: one observer a chunk instead of two)."""
        if size > self._max:
            self._off = True
        else:
            self._chunks = chunks

    def close(self) -> None:
        record = self._record
        if self._off or record.client_gone or record.error_code or record.success is not True:
            return
        reason = record.usage.finish_reason
        if reason in _INCOMPLETE or (reason in _TOOL_CALLS and not self._tool_calls):
            return
        chunks = self._chunks
        if not self._tool_calls:
            for chunk in chunks:
                if b'"function_call"' in chunk:
                    return  # a Responses answer that calls a tool
        headers = tuple(
            [
                (low, value)
                for name, value in self._headers
                if (low := name.lower()) not in _NOT_STORED
            ]
        )
        entry = CacheEntry(self._status, headers, tuple(chunks), time.time())
        self._store.save(self._key, entry, self._ttl)
