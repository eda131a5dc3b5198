"""Observers: what reads a response's bytes on their way to the client (the usage tap,
the cache recorder) without changing them. The pipe (`pipe.py`) feeds them and keeps
them fail-open — except for `StopStream`, an observer's one way to end a response
(a spend cap's `cut`)."""

from __future__ import annotations

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


class StopStream(Exception):
    """Raised by an observer's `feed` to end the stream before this chunk: the client
    gets the provider-shaped error event `code` instead of the rest."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
