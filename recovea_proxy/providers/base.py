"""The interface every provider module fills: where it lives, how it reports usage,
what its errors look like, and which endpoint a path names.

A provider knows wire formats only; it never imports levers, the meter or auth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import orjson

from recovea_proxy.providers.sse import MarkedLines, data_of
from recovea_proxy.providers.usage import Usage

# Endpoint kinds: what a request path asks the provider for.
CHAT = "chat"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
RESPONSES = "responses"
MESSAGES = "messages"
COUNT_TOKENS = "count_tokens"
MODELS = "models"
OTHER = "other"


class StreamTap(ABC):
    """Reads usage and the outcome from an SSE stream as its chunks pass, unchanged."""

    __slots__ = ("_lines", "usage")

    markers: tuple[bytes, ...] = ()

    def __init__(self) -> None:
        self._lines = MarkedLines(self.markers)
        self.usage = Usage()

    def feed(self, chunk: bytes) -> None:
        """Look at one chunk; parse only the lines that carry a marker."""
        lines = self._lines.feed(chunk)
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


class Provider(ABC):
    """One upstream API family: OpenAI, Anthropic or OpenRouter."""

    name: str = ""
    #: response header holding the provider's own request id
    request_id_header: bytes = b"x-request-id"
    #: the shape of the gateway's own errors on this provider's surface
    error_shape: str = "openai"

    @abstractmethod
    def endpoint_of(self, path: str) -> tuple[str, str]:
        """(endpoint kind, route template) for an upstream path such as `/v1/chat/completions`."""

    @abstractmethod
    def usage_from_json(self, kind: str, body: Any) -> Usage:
        """Usage and outcome from a whole (non-streamed) JSON response body."""

    @abstractmethod
    def stream_tap(self, kind: str) -> StreamTap | None:
        """A fresh tap for a streamed response of this kind, or None if it has no usage."""

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
