"""Anthropic's wire format: the Messages API, its usage fields and its stream events.

Usage is normalized to OpenAI's convention: `input_tokens` is every input token
(`input_tokens` + `cache_creation_input_tokens` + `cache_read_input_tokens`), and
`cached_tokens` is `cache_read_input_tokens`. Anthropic reports no separate
reasoning count, so `reasoning_tokens` stays None.

Cache writes by lifetime: `cache_write_1h_tokens` is
`cache_creation.ephemeral_1h_input_tokens` (0 without the breakdown) and
`cache_write_5m_tokens` the rest of `cache_creation_input_tokens` (5 minutes is the
default lifetime, and the only one before the breakdown existed), so the two always
add up to the writes counted in `input_tokens`. `usage.service_tier` other than
`standard` (`priority`, `batch`) is kept as the tier that served.
"""

from __future__ import annotations

from typing import Any

from recovea_proxy.providers.base import (
    COUNT_TOKENS,
    MESSAGES,
    MODELS,
    OTHER,
    Provider,
    StreamTap,
    WindowTap,
)
from recovea_proxy.providers.usage import Usage, as_count, served_tier

_EXACT = {
    "/v1/messages": (MESSAGES, "/v1/messages"),
    "/v1/messages/count_tokens": (COUNT_TOKENS, "/v1/messages/count_tokens"),
    "/v1/messages/batches": (OTHER, "/v1/messages/batches"),
    "/v1/models": (MODELS, "/v1/models"),
}


class _UsageParts:
    """Anthropic's separate input counters, kept until the final usage is known."""

    __slots__ = ("cache_creation", "cache_read", "input", "one_hour")

    def __init__(self) -> None:
        self.input: int | None = None
        self.cache_creation: int | None = None
        self.cache_read: int | None = None
        self.one_hour: int | None = None

    def update(self, obj: Any, usage: Usage) -> None:
        """Overwrite the counters this usage object reports (as the SDK does) and total them."""
        if not isinstance(obj, dict):
            return
        for field, attr in (
            ("input_tokens", "input"),
            ("cache_creation_input_tokens", "cache_creation"),
            ("cache_read_input_tokens", "cache_read"),
        ):
            value = as_count(obj.get(field))
            if value is not None:
                setattr(self, attr, value)
        breakdown = obj.get("cache_creation")
        if isinstance(breakdown, dict):
            one_hour = as_count(breakdown.get("ephemeral_1h_input_tokens"))
            if one_hour is not None:
                self.one_hour = one_hour
        tier = obj.get("service_tier")
        if tier is not None:
            usage.service_tier = served_tier(tier, "standard")
        output = as_count(obj.get("output_tokens"))
        if output is not None:
            usage.output_tokens = output
        if self.input is not None:
            usage.input_tokens = self.input + (self.cache_creation or 0) + (self.cache_read or 0)
        usage.cached_tokens = self.cache_read
        written = self.cache_creation
        if written is not None:
            one_hour = min(self.one_hour or 0, written)
            usage.cache_write_1h_tokens = one_hour
            usage.cache_write_5m_tokens = written - one_hour


class MessagesStreamTap(WindowTap):
    """`message_start` gives input usage; `message_delta` the final output and stop reason."""

    __slots__ = ("_parts",)

    HEAD_EVENTS = 1  # message_start
    TAIL_EVENTS = 4  # message_delta, message_stop (pings or an error may sit among them)

    def __init__(self) -> None:
        super().__init__()
        self._parts = _UsageParts()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self._parts.update(message.get("usage"), self.usage)
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.usage.finish_reason = delta["stop_reason"]
            self._parts.update(event.get("usage"), self.usage)
        elif kind == "message_stop":
            self.usage.terminal = True
        elif kind == "error":
            self.usage.error = True


class Anthropic(Provider):
    """api.anthropic.com."""

    name = "anthropic"
    request_id_header = b"request-id"
    error_shape = "anthropic"
    json_usage_kinds = frozenset({MESSAGES})

    def credential_headers(self, key: str) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", key),)

    def endpoint_of(self, path: str) -> tuple[str, str]:
        hit = _EXACT.get(path)
        if hit is not None:
            return hit
        if path.startswith("/v1/messages/batches/"):
            return OTHER, "/v1/messages/batches/*"
        if path.startswith("/v1/models/"):
            return MODELS, "/v1/models/{model}"
        if path.startswith("/v1/files"):
            return OTHER, "/v1/files/*"
        return OTHER, "/v1/other"

    def usage_from_json(self, kind: str, body: Any) -> Usage:
        usage = Usage()
        if not isinstance(body, dict):
            return usage
        if body.get("type") == "error":
            usage.error = True
            return usage
        usage.terminal = True
        if kind == MESSAGES:
            _UsageParts().update(body.get("usage"), usage)
            reason = body.get("stop_reason")
            usage.finish_reason = reason if isinstance(reason, str) else None
        return usage

    def stream_tap(self, kind: str) -> StreamTap | None:
        return MessagesStreamTap() if kind == MESSAGES else None


PROVIDER = Anthropic()
