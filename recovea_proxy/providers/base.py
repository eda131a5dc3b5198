"""The interface every provider module fills: where it lives, how it reports usage,
what its errors look like, and which endpoint a path names.

A provider knows wire formats only; it never imports levers, the meter or auth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from recovea_proxy.providers.json_tail import JsonTail
from recovea_proxy.providers.sse import MarkedLines, data_of
from recovea_proxy.providers.usage import Usage

# Endpoint kinds: what a request path asks the provider for.
CHAT = "chat"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
IMAGES = "images"  # image generations and edits
TRANSCRIPTIONS = "transcriptions"  # audio transcriptions and translations
RESPONSES = "responses"
MESSAGES = "messages"
COUNT_TOKENS = "count_tokens"
MODELS = "models"
OTHER = "other"


class StreamTap(ABC):
    """Reads usage and the outcome from an SSE stream as its chunks pass, unchanged.

    `feed` sees every chunk; `close` is called once when the stream ends (normally,
    broken, or abandoned) and is where window-based taps read their events.
    """

    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage = Usage()

    @abstractmethod
    def feed(self, chunk: bytes) -> None:
        """Look at one chunk on its way to the client."""

    @abstractmethod
    def close(self) -> None:
        """The stream has ended: settle whatever is still pending."""

    def dispatch(self, lines: Iterable[bytes]) -> None:
        """Parse the `data:` payloads of these lines and hand them to `on_event`."""
        for line in lines:
            data = data_of(line)
            if data is None:
                continue
            if data.startswith(b"[DONE]"):
                self.usage.terminal = True
                continue
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self.on_event(event)

    @abstractmethod
    def on_event(self, event: dict[str, Any]) -> None:
        """One parsed SSE data payload that contained a marker."""


class MarkerTap(StreamTap):
    """Scans each chunk for the markers and parses the lines that hold one.

    For streams whose usage event can be arbitrarily large (the Responses API's final
    event carries the whole response).
    """

    __slots__ = ("_lines",)

    markers: tuple[bytes, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._lines = MarkedLines(self.markers)

    def feed(self, chunk: bytes) -> None:
        lines = self._lines.feed(chunk)
        if lines:
            self.dispatch(lines)

    def close(self) -> None:
        # Every complete line was read as it passed; an unterminated one never counts.
        return None


class WindowTap(StreamTap):
    """Keeps the stream's first and last chunks (about WINDOW bytes each) and, when the
    stream ends, parses only its first HEAD_EVENTS and last TAIL_EVENTS data lines.

    For streams whose usage sits in small events at their edges (Chat Completions:
    finish, usage, [DONE] at the end; Anthropic: message_start first, message_delta
    and message_stop last; an error event is always last): per chunk this costs an
    append, and per stream a handful of parses, never a scan of every chunk.
    """

    __slots__ = ("_head", "_head_size", "_tail", "_tail_size", "_trimmed")

    WINDOW = 32 * 1024
    HEAD_EVENTS = 0
    TAIL_EVENTS = 4

    def __init__(self) -> None:
        super().__init__()
        self._head: list[bytes] = []
        self._head_size = 0
        # made when the head is full: most streams never need it (a deque is ~0.7 KiB)
        self._tail: deque[bytes] | None = None
        self._tail_size = 0
        self._trimmed = False

    def feed(self, chunk: bytes) -> None:
        if self._head_size < self.WINDOW:
            self._head.append(chunk)
            self._head_size += len(chunk)
            return
        tail = self._tail
        if tail is None:
            tail = self._tail = deque()
        tail.append(chunk)
        self._tail_size += len(chunk)
        while self._tail_size - len(tail[0]) >= self.WINDOW:
            self._tail_size -= len(tail.popleft())
            self._trimmed = True

    def read_end(self, end: bytes) -> bool:
        """Settle the usage from the stream's last bytes alone, without parsing events;
        False to fall back to parsing the edge events. (A cheaper path a provider may
        offer when its final events have a fixed, compact shape.)"""
        return False

    def close(self) -> None:
        head, tail = self._head, self._tail or ()
        self._head, self._tail = [], None
        if not self.HEAD_EVENTS:
            last = tail[-1] if tail else (head[-1] if head else b"")
            end = last if len(last) >= _END_BYTES else b"".join((*head, *tail))[-_END_BYTES:]
            if self.read_end(end):
                return
        if not self._trimmed:
            buf = b"".join((*head, *tail))
            if buf.count(b"\n") > _EDGE_LINES * 2:
                self.dispatch(
                    _first_data(buf, self.HEAD_EVENTS) + _last_data(buf, self.TAIL_EVENTS)
                )
                return
            data = _data_lines(buf, whole_start=True)
            cut = max(self.HEAD_EVENTS, len(data) - self.TAIL_EVENTS)
            self.dispatch(data[: self.HEAD_EVENTS] + data[cut:])
            return
        first = _first_data(b"".join(head), self.HEAD_EVENTS)
        self.dispatch(first + _last_data(b"".join(tail), self.TAIL_EVENTS))


class JsonTailTap(StreamTap):
    """A JSON body too large to buffer: keeps its last bytes (`JsonTail`) as they pass
    and, when it ends, reads the usage in them with the provider's JSON reader (given
    `{"usage": <the object>}`). A body that ends like a whole JSON object is a normal
    end even when it holds no usage."""

    __slots__ = ("_read", "_tail")

    def __init__(self, read: Callable[[Any], Usage]) -> None:
        super().__init__()
        self._read = read
        self._tail = JsonTail()

    def feed(self, chunk: bytes) -> None:
        self._tail.feed(chunk)

    def close(self) -> None:
        tail = self._tail
        found = tail.usage_object()
        if found is not None:
            self.usage = self._read({"usage": found})
        self.usage.terminal = tail.complete()

    def on_event(self, event: dict[str, Any]) -> None:
        return None  # not an event stream


# Lines looked at from each edge: enough for 4 events of up to 3 lines (event:, data:,
# blank) plus comments and pings in between.
_EDGE_LINES = 16
# How much of a stream's end `read_end` sees.
_END_BYTES = 8 * 1024


def _first_data(buf: bytes, count: int) -> list[bytes]:
    """The first `count` complete data lines of a stream's start."""
    if not count:
        return []
    lines = buf.split(b"\n", _EDGE_LINES)
    lines.pop()  # the rest of the buffer, or an unterminated fragment
    return [line for line in lines if line[:5] == b"data:"][:count]


def _last_data(buf: bytes, count: int) -> list[bytes]:
    """The last `count` complete data lines of a stream's end."""
    lines = buf.rsplit(b"\n", _EDGE_LINES)
    lines.pop()  # after the last line end: empty, or an unterminated fragment
    del lines[0]  # before the edge window: possibly a partial line
    return [line for line in lines if line[:5] == b"data:"][-count:]


def _data_lines(buf: bytes, *, whole_start: bool) -> list[bytes]:
    """The complete `data:` lines of a window of the stream, in order.

    A window that starts mid-stream drops its first (possibly partial) line; an
    unterminated last line is never dispatched, as SSE requires.
    """
    if buf.find(b"\n") < 0 and buf.find(b"\r") >= 0:  # `find`: see `header_check`
        buf = buf.replace(b"\r", b"\n")
    lines = buf.split(b"\n")
    lines.pop()  # after the last line end: empty, or an unterminated fragment
    if not whole_start and lines:
        lines.pop(0)
    return [line for line in lines if line[:5] == b"data:"]


class Provider(ABC):
    """One upstream API family: OpenAI, Anthropic or OpenRouter."""

    name: str = ""
    #: response header holding the provider's own request id
    request_id_header: bytes = b"x-request-id"
    #: the shape of the gateway's own errors on this provider's surface
    error_shape: str = "openai"

    def credential_headers(self, key: str) -> tuple[tuple[str, str], ...]:
        """The request headers that carry the workspace's key to this provider."""
        return (("authorization", f"Bearer {key}"),)

    @abstractmethod
    def endpoint_of(self, path: str) -> tuple[str, str]:
        """(endpoint kind, route template) for an upstream path such as `/v1/chat/completions`."""

    @abstractmethod
    def usage_from_json(self, kind: str, body: Any) -> Usage:
        """Usage and outcome from a whole (non-streamed) JSON response body."""

    @abstractmethod
    def stream_tap(self, kind: str) -> StreamTap | None:
        """A fresh tap for a streamed response of this kind, or None if it has no usage."""

    #: endpoint kinds whose JSON bodies report usage (`usage_from_json` reads it)
    json_usage_kinds: frozenset[str] = frozenset()
    #: endpoint kinds whose answers the provider stores unless the body says
    #: `store: false` (an answer the exact cache must not share: see `levers.cache_key`)
    stores_by_default: frozenset[str] = frozenset()

    def json_tail_tap(self, kind: str) -> StreamTap | None:
        """A fresh tap for a JSON body of this kind too large to buffer, or None if its
        JSON has no usage."""
        if kind not in self.json_usage_kinds:
            return None
        return JsonTailTap(lambda body: self.usage_from_json(kind, body))

    def prepare_request(self, kind: str, parsed: dict[str, Any], body: bytes) -> tuple[bytes, bool]:
        """The body to send upstream, and whether the stream needs its added usage removed.

        A provider may ask upstream for usage the client did not ask for; it must then
        hide the difference from the client (see `stream_filter`).
        """
        return body, False

    def stream_filter(self) -> StreamFilter | None:
        """A filter that undoes what `prepare_request` added to a stream."""
        return None


class StreamFilter(ABC):
    """Rewrites a stream's bytes on their way to the client (whole lines only)."""

    __slots__ = ()

    @abstractmethod
    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send for this chunk (an unfinished last line is held back)."""

    @abstractmethod
    def flush(self) -> bytes:
        """Whatever is still held when the upstream ends."""
