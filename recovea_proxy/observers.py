"""Observers: what reads a response's bytes on their way to the client (the usage tap,
the cache recorder) without changing them. The pipe (`pipe.py`) feeds them and keeps
them fail-open — except for `StopStream`, an observer's one way to end a response
(a spend cap's `cut`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from recovea_proxy.sources import ResponseSource


class Observer(Protocol):
    """Reads a response's bytes on their way to the client."""

    def feed(self, chunk: bytes) -> None:
        """One chunk (for a buffered JSON body: the whole body, once)."""

    def close(self) -> None:
        """The response has ended (normally, broken or abandoned); the record is
        settled by now."""


class LeverObserver(Observer, Protocol):
    """An observer a lever attaches: told the response's status and headers first."""

    def begin(self, source: ResponseSource) -> None:
        """The response is about to be sent (status and headers are known)."""


class Recorder(LeverObserver, Protocol):
    """A lever observer that keeps every chunk of the response (a leader's flight): the
    pipe appends them to its buffer itself instead of calling `feed` for each (a
    stream's chunks cost a list append, not a call), within the room `intake` gives."""

    @property
    def waiter(self) -> object | None:
        """Set while someone waits for the next chunk (the pipe then calls `notify`)."""
        ...

    def intake(self) -> tuple[Callable[[bytes], object], int]:
        """The buffer's append, and the bytes the pipe may append before `feed_past`."""
        ...

    def feed_past(self, taken: int, chunk: bytes) -> None:
        """A chunk past the room, after `taken` bytes appended since `intake`."""
        ...

    def settle(self, taken: int) -> None:
        """The response ended, `taken` bytes appended since `intake`."""
        ...

    def whole(self, body: bytes) -> None:
        """A body read whole (a buffered JSON answer): `feed` and `close` in one call."""
        ...

    def notify(self) -> None:
        """Wake whoever waits (`waiter`)."""
        ...


class StopStream(Exception):
    """Raised by an observer's `feed` to end the stream before this chunk: the client
    gets the provider-shaped error event `code` instead of the rest."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
