"""Where a response comes from. The pipe (`pipe.py`) reads a status line, headers and
body chunks from a source and does not know which kind it has:

| source | status and headers | body |
| --- | --- | --- |
| `UpstreamSource` | the provider's response | read off the upstream connection |
| `ReplaySource` | stored with a cache entry | the stored chunks, as they came |
| `flights.Subscription` | the shared call's | what has passed, then live |

A source that holds chunks already (a replay, a flight's buffer) hands them on
several at a time (`take`: up to `PIECE_MAX` bytes a read). The bytes, and so the
events a client's SSE parser reads, are the ones that came; only the writes are
fewer: a streamed hit of a 500-token answer stored as 500 reads would otherwise
leave as 500 writes, each a pass through the pipe and a send of its own.

`read` is the source's own coroutine function (for the upstream, aiohttp's `readany`
itself until the body starts; from then a thin wrapper that notes when each wait
begins, for the idle watch); a failure while reading is one of
`errors`, which `kind_of` names with a bounded label (`reset`, `idle_timeout`, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import aiohttp

from recovea_proxy.headers import NOT_REPLAYED, response_headers
from recovea_proxy.providers.usage import Usage
from recovea_proxy.upstream import classify

Headers = Sequence[tuple[bytes, bytes]]

#: the most a held source hands on in one read (several stored chunks joined)
PIECE_MAX = 64 * 1024


def take(chunks: Sequence[bytes], at: int) -> tuple[bytes, int]:
    """The chunks from `at` on, joined while they total at most `PIECE_MAX` (always
    at least one), and the index after them; `at` must be within `chunks`."""
    first = chunks[at]
    size, end, count = len(first), at + 1, len(chunks)
    while end < count:
        size += len(chunks[end])
        if size > PIECE_MAX:
            break
        end += 1
    return (first if end == at + 1 else b"".join(chunks[at:end])), end


class ResponseSource(Protocol):
    """A response the pipe can send on."""

    @property
    def plan(self) -> ReplayPlan | None:
        """What is known of the answer from its earlier replays (a `ReplaySource`'s;
        None for any other source)."""
        ...

    @property
    def status(self) -> int: ...

    @property
    def raw_headers(self) -> Headers: ...

    @property
    def content_type(self) -> bytes:
        """Lowercased `content-type`, b"" when absent."""
        ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def identity_encoded(self) -> bool:
        """The body is not content-encoded (it can be read, hashed and tapped as is)."""
        ...

    @property
    def read(self) -> Callable[[], Awaitable[bytes]]:
        """The next chunk; b"" at the end; one of `errors` when the body broke off."""
        ...

    @property
    def errors(self) -> tuple[type[BaseException], ...]: ...

    def kind_of(self, exc: BaseException) -> str:
        """A short, bounded label for a failure while reading."""
        ...

    def start_body(self) -> None:
        """The status line is about to be sent: from now on a read may wait at most the
        idle timeout between chunks."""
        ...

    def finish(self, *, clean: bool) -> None:
        """The response is done with: keep what can be reused when `clean`."""
        ...


class UpstreamSource:
    """The provider's own response, on the shared client session.

    Once the status line is on its way (`start_body`), a read may wait at most the idle
    timeout: the source's own watch, one timer per idle window, set for when the read
    in progress began. (aiohttp's read timer would do it, but it makes and cancels a
    uvloop timer for every chunk it receives: 1 to 2 µs a chunk, more than a chunk's own
    work in the pipe, on every token of a model's stream.)"""

    __slots__ = (
        "_idle_s",
        "_readany",
        "_response",
        "_waiting_since",
        "_watch",
        "content_length",
        "content_type",
        "identity_encoded",
        "raw_headers",
        "read",
        "status",
    )

    errors: tuple[type[BaseException], ...] = (TimeoutError, aiohttp.ClientError, OSError)
    plan: ReplayPlan | None = None

    def __init__(self, response: aiohttp.ClientResponse, idle_timeout_s: float) -> None:
        self._response = response
        self._idle_s = idle_timeout_s
        headers = response.headers
        self.status = response.status
        self.raw_headers = response.raw_headers
        self.content_type = headers.get("content-type", "").encode("latin-1").lower()
        self.content_length = response.content_length
        self.identity_encoded = headers.get("content-encoding") in (None, "identity")
        self.read = self._readany = response.content.readany
        #: when the read in progress began (monotonic seconds; 0: none is)
        self._waiting_since = 0.0
        self._watch: asyncio.TimerHandle | None = None

    def kind_of(self, exc: BaseException) -> str:
        kind = classify(exc)
        return "idle_timeout" if kind == "timeout" else kind

    def start_body(self) -> None:
        connection = self._response.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is None:
            return
        # aiohttp's read timer bounded the wait for the response headers: stopped here
        # (it is set again for the connection's next request)
        protocol.read_timeout = None
        protocol.start_timeout()
        self.read = self._read_watched
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_later(self._idle_s, self._check_idle)

    async def _read_watched(self) -> bytes:
        """`readany`, noting when the wait began (what the idle watch measures)."""
        self._waiting_since = time.monotonic()
        try:
            return await self._readany()
        finally:
            self._waiting_since = 0.0

    def _check_idle(self) -> None:
        """Fail the read in progress once it has waited the idle timeout; else look again
        when it (or a read that begins later) could have."""
        if self._response.closed:
            self._watch = None
            return
        delay = self._idle_s
        since = self._waiting_since
        if since:
            waited = time.monotonic() - since
            if waited >= delay:
                self._watch = None
                # what aiohttp's own read timer raises (`kind_of`: `idle_timeout`)
                exc = aiohttp.SocketTimeoutError("Timeout on reading data from socket")
                connection = self._response.connection
                if connection is not None and connection.protocol is not None:
                    connection.protocol.set_exception(exc)
                self._response.content.set_exception(exc)
                return
            delay -= waited
        self._watch = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def finish(self, *, clean: bool) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if clean:
            self._response.release()
        else:
            self._response.close()  # a broken or abandoned response: drop the connection


class ReplayPlan:
    """What every replay of one stored answer sends besides its body, worked out once
    and shared by its replays: the stored headers lowercased, less those never
    replayed (`headers.NOT_REPLAYED`: the entry holds the provider's headers as they
    came, so a miss spends nothing on them), its content type, and, once the pipe has
    read it from the first whole replay of a JSON body, its usage (`pipe.py`: the
    same bytes give the same usage, so later hits copy it instead of parsing)."""

    __slots__ = ("_returned", "content_type", "headers", "usage")

    def __init__(self, stored_headers: Headers) -> None:
        headers = []
        content_type = b""
        for name, value in stored_headers:
            lowered = name.lower()
            if lowered in NOT_REPLAYED:
                continue
            if lowered == b"content-type":
                content_type = value.lower()
            headers.append((lowered, value))
        self.headers = tuple(headers)
        self.content_type = content_type
        self.usage: Usage | None = None
        #: `returned_headers` as worked out for a provider's request-id header
        self._returned: tuple[bytes, Headers, bytes | None] | None = None

    def returned_headers(
        self, request_id_header: bytes, replayed: Headers
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """What `headers.response_headers` returns for a replay of a body read whole
        (its length not kept) whose headers are `replayed` (a `ReplaySource`'s: this
        plan's, then its own age), worked out once for the plan's: the same for every
        hit. The replay's own come last, as they are."""
        returned = self._returned
        if returned is None or returned[0] != request_id_header:
            out, upstream_id = response_headers(self.headers, request_id_header, keep_length=False)
            returned = self._returned = (request_id_header, tuple(out), upstream_id)
        return [*returned[1], *replayed[len(self.headers) :]], returned[2]


class ReplaySource:
    """A stored response, replayed as it first came (`take`), with the headers of its
    `ReplayPlan` and its `age` in seconds when given (RFC 9111 §5.1: a cache says how
    old what it serves is)."""

    __slots__ = (
        "_chunks",
        "_next",
        "content_length",
        "content_type",
        "identity_encoded",
        "plan",
        "raw_headers",
        "status",
    )

    errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self, status: int, plan: ReplayPlan, chunks: Sequence[bytes], age: int | None = None
    ) -> None:
        self.status = status
        self.plan = plan
        self._chunks = chunks
        self._next = 0
        self.content_type = plan.content_type
        self.content_length = None
        self.raw_headers = (
            [*plan.headers, (b"age", b"%d" % age)] if age is not None else list(plan.headers)
        )
        self.identity_encoded = True

    async def read(self) -> bytes:
        if self._next >= len(self._chunks):
            return b""
        piece, self._next = take(self._chunks, self._next)
        return piece

    def kind_of(self, exc: BaseException) -> str:
        return "error"

    def start_body(self) -> None:
        return None

    def finish(self, *, clean: bool) -> None:
        return None
