"""OpenAI's wire format: endpoints, usage fields, stream taps and the usage opt-in.

Chat Completions and Completions report usage in a stream only when the client asks
for `stream_options.include_usage`. The gateway always asks, and when the client did
not, `HiddenUsageFilter` removes the extra usage chunk and the `"usage":null` keys so
the client receives exactly the stream it would have received directly.

The tier that served is the response's (or chunk's) top-level `service_tier`, kept
unless it is `default`; cache writes, where reported
(`prompt_tokens_details.cache_write_tokens`, as OpenRouter does), count as 5-minute
writes (the lifetime is not reported).

Images (generations, edits) and audio (transcriptions, translations) report
`input_tokens` and `output_tokens` in `usage` for the token-billed models (gpt-image-*,
gpt-4o-*-transcribe); a streamed transcription carries the same usage in its final
`transcript.text.done` event, a streamed image its final `image_generation.completed`
(`image_edit.completed`) event. Whisper's duration usage and dall-e's absent one leave
the counts None.
"""

from __future__ import annotations

from typing import Any

import orjson

from recovea_proxy.json_bytes import dumps_held
from recovea_proxy.providers.base import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    IMAGES,
    MODELS,
    OTHER,
    RESPONSES,
    TRANSCRIPTIONS,
    MarkerTap,
    Provider,
    StreamFilter,
    StreamTap,
    WindowTap,
)
from recovea_proxy.providers.json_tail import JsonTail, usage_object
from recovea_proxy.providers.sse import MAX_PENDING_LINE
from recovea_proxy.providers.usage import Usage, as_count, nested_count, served_tier

_EXACT = {
    "/v1/chat/completions": (CHAT, "/v1/chat/completions"),
    "/v1/completions": (COMPLETIONS, "/v1/completions"),
    "/v1/embeddings": (EMBEDDINGS, "/v1/embeddings"),
    "/v1/responses": (RESPONSES, "/v1/responses"),
    "/v1/models": (MODELS, "/v1/models"),
    "/v1/images/generations": (IMAGES, "/v1/images/generations"),
    "/v1/images/edits": (IMAGES, "/v1/images/edits"),
    "/v1/audio/transcriptions": (TRANSCRIPTIONS, "/v1/audio/transcriptions"),
    "/v1/audio/translations": (TRANSCRIPTIONS, "/v1/audio/translations"),
}

# First path segments that get their own metric label; anything else is "/v1/other"
# so a client cannot grow the label set.
_KNOWN_SEGMENTS = frozenset(
    {
        "assistants",
        "audio",
        "batches",
        "chat",
        "completions",
        "containers",
        "conversations",
        "embeddings",
        "evals",
        "files",
        "fine_tuning",
        "images",
        "models",
        "moderations",
        "realtime",
        "responses",
        "threads",
        "uploads",
        "vector_stores",
    }
)


def openai_endpoint_of(path: str) -> tuple[str, str]:
    """Endpoint kind and bounded route template of an OpenAI-style `/v1/...` path."""
    hit = _EXACT.get(path)
    if hit is not None:
        return hit
    parts = path.split("/", 3)
    segment = parts[2] if len(parts) > 2 and parts[1] == "v1" else ""
    if segment == "models":
        return MODELS, "/v1/models/{model}"
    if segment in _KNOWN_SEGMENTS:
        return OTHER, f"/v1/{segment}/*"
    return OTHER, "/v1/other"


def chat_usage(obj: Any, usage: Usage) -> None:
    """Copy a Chat Completions / Completions / Embeddings `usage` object into `usage`."""
    if not isinstance(obj, dict):
        return
    usage.input_tokens = as_count(obj.get("prompt_tokens"))
    usage.output_tokens = as_count(obj.get("completion_tokens"))
    usage.cached_tokens = nested_count(obj, "prompt_tokens_details", "cached_tokens")
    usage.reasoning_tokens = nested_count(obj, "completion_tokens_details", "reasoning_tokens")
    usage.cache_write_5m_tokens = nested_count(obj, "prompt_tokens_details", "cache_write_tokens")


def responses_usage(obj: Any, usage: Usage) -> None:
    """Copy a Responses API `usage` object into `usage`."""
    if not isinstance(obj, dict):
        return
    usage.input_tokens = as_count(obj.get("input_tokens"))
    usage.output_tokens = as_count(obj.get("output_tokens"))
    usage.cached_tokens = nested_count(obj, "input_tokens_details", "cached_tokens")
    usage.reasoning_tokens = nested_count(obj, "output_tokens_details", "reasoning_tokens")
    usage.cache_write_5m_tokens = nested_count(obj, "input_tokens_details", "cache_write_tokens")


def token_usage(obj: Any, usage: Usage, details: str) -> None:
    """Copy an images or audio `usage` object (`input_tokens`, `output_tokens`, cached
    tokens in `details` where reported) into `usage`. Whisper's `{"type": "duration",
    "seconds": N}` has no tokens: the counts stay None."""
    if not isinstance(obj, dict) or obj.get("type") == "duration":
        return
    usage.input_tokens = as_count(obj.get("input_tokens"))
    usage.output_tokens = as_count(obj.get("output_tokens"))
    usage.cached_tokens = nested_count(obj, details, "cached_tokens")


def service_tier(obj: dict[str, Any], usage: Usage) -> None:
    """The tier that served, from a response or chunk's `service_tier` (when it has one)."""
    tier = obj.get("service_tier")
    if tier is not None:
        usage.service_tier = served_tier(tier, "default")


def _first_finish_reason(choices: Any) -> str | None:
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict):
                reason = choice.get("finish_reason")
                if isinstance(reason, str):
                    return reason
    return None


def response_outcome(response: Any, usage: Usage) -> None:
    """Finish reason and terminal state of a Responses API `response` object."""
    if not isinstance(response, dict):
        return
    responses_usage(response.get("usage"), usage)
    service_tier(response, usage)
    status = response.get("status")
    details = response.get("incomplete_details")
    if status == "incomplete" and isinstance(details, dict) and details.get("reason"):
        usage.finish_reason = str(details["reason"])
    elif isinstance(status, str):
        usage.finish_reason = status
    if status == "failed" or response.get("error"):
        usage.error = True
    if status in ("completed", "incomplete", "failed", "cancelled"):
        usage.terminal = True


class ChatStreamTap(WindowTap):
    """Chat Completions / Completions streams: finish_reason chunk, usage chunk, [DONE]."""

    __slots__ = ()

    TAIL_EVENTS = 4  # the finish chunk(s), the usage chunk, [DONE]; or an error

    def read_end(self, end: bytes) -> bool:
        """The compact shape OpenAI and OpenRouter send: read the finish reason and the
        usage object by position, parse only the usage object."""
        # `find`, not `in`: see `header_check.holds_refused_byte`
        if end.find(b'"error"') >= 0 or not end.endswith(b"data: [DONE]\n\n"):
            return False
        at = end.rfind(b'"usage":{')
        if at < 0:
            return False
        line_end = end.find(b"\n", at)
        try:
            # The usage object is the chunk's last key: drop the chunk's closing brace.
            usage = orjson.loads(end[at + 8 : line_end].rstrip()[:-1])
        except orjson.JSONDecodeError:
            return False
        reason_at = end.rfind(b'"finish_reason":"', 0, at)
        if reason_at < 0:
            return False
        start = reason_at + 17
        reason = end[start : end.find(b'"', start)]
        if reason.find(b"\\") >= 0:
            return False  # an escaped character: let the JSON parser read it
        tier_at = end.find(b'"service_tier":', end.rfind(b"\n", 0, at) + 1, at)
        tier: Any = None
        if tier_at >= 0:
            start = tier_at + 15
            stop = end.find(b",", start)
            try:
                tier = orjson.loads(end[start:stop])
            except orjson.JSONDecodeError:
                return False
        self.usage.finish_reason = reason.decode("utf-8", "replace")
        chat_usage(usage, self.usage)
        if tier is not None:
            self.usage.service_tier = served_tier(tier, "default")
        self.usage.terminal = True
        return True

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("error"):
            self.usage.error = True
            return
        reason = _first_finish_reason(event.get("choices"))
        if reason is not None:
            self.usage.finish_reason = reason
        service_tier(event, self.usage)
        if event.get("usage"):
            chat_usage(event["usage"], self.usage)


class ResponsesStreamTap(MarkerTap):
    """Responses API streams: the final `response.*` event carries the whole response."""

    __slots__ = ()

    markers = (
        b'"response.completed"',
        b'"response.incomplete"',
        b'"response.failed"',
        b'"type":"error"',
        b'"type": "error"',
    )

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "error":
            self.usage.error = True
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response_outcome(event.get("response"), self.usage)


class TranscriptionStreamTap(MarkerTap):
    """Streamed transcriptions: the final `transcript.text.done` event carries the usage."""

    __slots__ = ()

    markers = (b'"transcript.text.done"', b'"type":"error"', b'"type": "error"')

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "error":
            self.usage.error = True
        elif kind == "transcript.text.done":
            token_usage(event.get("usage"), self.usage, "input_token_details")
            self.usage.terminal = True


class ImageStreamTap(StreamTap):
    """Image generation and edit streams: the final `image_generation.completed` (or
    `image_edit.completed`) event carries the usage after a base64 image of up to
    megabytes, too long a line to hold. So only the stream's last bytes are kept
    (`JsonTail`), and its last top-level `usage` object is read from them at the end."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        super().__init__()
        self._tail = JsonTail()

    def feed(self, chunk: bytes) -> None:
        self._tail.feed(chunk)

    def close(self) -> None:
        tail = self._tail
        end = tail.value().rstrip()
        if end.endswith(b"data: [DONE]"):
            end = end[:-12].rstrip()
        last = end.rsplit(b"\n", 1)[-1]
        if last.find(b'"type":"error"') >= 0 or last.find(b'"type": "error"') >= 0:
            self.usage.error = True
            return
        found = usage_object(end, whole=not tail.trimmed)
        if found is not None:
            token_usage(found, self.usage, "input_tokens_details")
            self.usage.terminal = True

    def on_event(self, event: dict[str, Any]) -> None:
        return None  # read from the tail at the end, not event by event


class HiddenUsageFilter(StreamFilter):
    """Removes the usage the gateway asked for on the client's behalf from a chat stream:
    the `"usage":null` key of every chunk and the final usage-only event."""

    __slots__ = ("_drop_blank", "_held", "_held_size")

    def __init__(self) -> None:
        #: the line in progress (no line end yet), as its pieces came: joined once, when
        #: it ends, so a long line sent in small pieces is copied once, not per piece
        self._held: list[bytes] = []
        self._held_size = 0
        self._drop_blank = False

    def feed(self, chunk: bytes) -> bytes:
        held = self._held
        if not held and chunk[-1:] == b"\n":  # the usual chunk: whole events
            out = chunk
        else:
            cut = chunk.rfind(b"\n") + 1
            if not cut:  # the line goes on
                held.append(chunk)
                self._held_size += len(chunk)
                if self._held_size <= MAX_PENDING_LINE:
                    return b""
                # A line this long is no usage event: passed on as it came, so that
                # what is held stays bounded (nothing is lost).
                self._drop_blank = False
                return self.flush()
            out = b"".join((*held, chunk[:cut])) if held else chunk[:cut]
            held.clear()
            rest = chunk[cut:]
            if rest:
                held.append(rest)
            self._held_size = len(rest)
        if self._drop_blank and out:
            # The usage event's data line ended an earlier chunk; its blank line is the
            # first complete line now (a chunk without a line end leaves it pending).
            self._drop_blank = False
            if out[:1] == b"\n":
                out = out[1:]
            elif out[:2] == b"\r\n":
                out = out[2:]
        # Every chunk of a stream that asks for usage holds the key: replaced without a
        # search first (`replace` hands back the same bytes when there is none; a
        # `find` costs more than either, its arguments parsed the old way on 3.11).
        out = out.replace(b',"usage":null', b"").replace(b'"usage":null,', b"")
        at = out.find(b'"choices":[]')
        while at >= 0:
            start = out.rfind(b"\n", 0, at) + 1
            end = out.find(b"\n", at)
            line = out[start:end]
            if line.startswith(b"data:") and (
                line.find(b'"usage":{') >= 0 or line.find(b'"usage": {') >= 0
            ):
                blank = out[end + 1 : end + 3]
                if blank[:1] == b"\n":
                    end += 1
                elif blank == b"\r\n":
                    end += 2
                elif end + 1 == len(out):
                    self._drop_blank = True
                out = out[:start] + out[end + 1 :]
                at = out.find(b'"choices":[]', start)
            else:
                at = out.find(b'"choices":[]', at + 1)
        return out

    def flush(self) -> bytes:
        held = b"".join(self._held)
        self._held.clear()
        self._held_size = 0
        return held


class OpenAI(Provider):
    """api.openai.com."""

    name = "openai"
    request_id_header = b"x-request-id"
    error_shape = "openai"
    json_usage_kinds = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, IMAGES, TRANSCRIPTIONS})
    #: the Responses API stores a response unless told `store: false` (and `background`
    #: needs it stored)
    stores_by_default = frozenset({RESPONSES})

    def endpoint_of(self, path: str) -> tuple[str, str]:
        return openai_endpoint_of(path)

    def usage_from_json(self, kind: str, body: Any) -> Usage:
        usage = Usage()
        if not isinstance(body, dict):
            return usage
        if body.get("error"):
            usage.error = True
            return usage
        usage.terminal = True
        if kind == RESPONSES:
            response_outcome(body, usage)
        elif kind in (CHAT, COMPLETIONS, EMBEDDINGS):
            chat_usage(body.get("usage"), usage)
            service_tier(body, usage)
            usage.finish_reason = _first_finish_reason(body.get("choices"))
        elif kind == IMAGES:
            token_usage(body.get("usage"), usage, "input_tokens_details")
        elif kind == TRANSCRIPTIONS:
            token_usage(body.get("usage"), usage, "input_token_details")
        return usage

    def stream_tap(self, kind: str) -> StreamTap | None:
        if kind in (CHAT, COMPLETIONS):
            return ChatStreamTap()
        if kind == RESPONSES:
            return ResponsesStreamTap()
        if kind == TRANSCRIPTIONS:
            return TranscriptionStreamTap()
        if kind == IMAGES:
            return ImageStreamTap()
        return None

    def prepare_request(self, kind: str, parsed: dict[str, Any], body: bytes) -> tuple[bytes, bool]:
        if kind not in (CHAT, COMPLETIONS) or parsed.get("stream") is not True:
            return body, False
        options = parsed.get("stream_options")
        # `"stream_options": null` counts as absent; but the key is in the body then,
        # and a second one added in front would lose to it: rewrite the whole body.
        if options is None and body[:1] == b"{" and "stream_options" not in parsed:
            # Cheapest exact rewrite: add the one key at the front, keep every byte after.
            return b'{"stream_options":{"include_usage":true},' + body[1:], True
        if options is None or (
            isinstance(options, dict) and options.get("include_usage") is not True
        ):
            rewritten = dict(parsed)
            rewritten["stream_options"] = {**(options or {}), "include_usage": True}
            return dumps_held(rewritten), True
        return body, False

    def stream_filter(self) -> StreamFilter | None:
        return HiddenUsageFilter()


PROVIDER = OpenAI()
