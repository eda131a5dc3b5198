"""Provider-shaped error bodies: as whole responses and as events in the middle of a stream.

    OpenAI      {"error": {"message", "type", "param", "code"}}
    OpenRouter  {"error": {"code": <HTTP status>, "message"}}
    Anthropic   {"type": "error", "error": {"type", "message"}, "request_id"}

Each situation the mock can answer with (`Failure`) maps to one status and one body
per provider, so a gateway test can compare what it relays with what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

import orjson
from aiohttp import web

Surface = Literal["openai", "anthropic", "openrouter"]


class Failure(Enum):
    """Why the mock refuses a request."""

    AUTH = "auth"
    BAD_JSON = "bad_json"
    NO_MODEL = "no_model"
    NOT_FOUND = "not_found"
    SERVER = "server"
    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"

    @property
    def status(self) -> int:
        return _SHAPES[self].status


@dataclass(frozen=True, slots=True)
class _Shape:
    status: int
    openai_type: str
    openai_code: str | None
    openai_message: str  # also OpenRouter's
    anthropic_type: str
    anthropic_message: str


_SHAPES: dict[Failure, _Shape] = {
    Failure.AUTH: _Shape(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        "authentication_error",
        "x-api-key header is required",
    ),
    Failure.BAD_JSON: _Shape(
        400,
        "invalid_request_error",
        None,
        "We could not parse the JSON body of your request. (HINT: This likely means you "
        "aren't using your HTTP library correctly.)",
        "invalid_request_error",
        "There was an issue with the request body: it is not a valid JSON object.",
    ),
    Failure.NO_MODEL: _Shape(
        400,
        "invalid_request_error",
        None,
        "you must provide a model parameter",
        "invalid_request_error",
        "model: Field required",
    ),
    Failure.NOT_FOUND: _Shape(
        404, "invalid_request_error", None, "Invalid URL", "not_found_error", "Not found"
    ),
    Failure.SERVER: _Shape(
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
        "api_error",
        "Internal server error",
    ),
    Failure.RATE_LIMIT: _Shape(
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (mock). Please try again in 0s.",
        "rate_limit_error",
        "Number of requests has exceeded your rate limit (mock).",
    ),
    Failure.OVERLOADED: _Shape(
        529,
        "server_error",
        "overloaded",
        "The server is overloaded (mock).",
        "overloaded_error",
        "Overloaded",
    ),
}


def error_body(surface: Surface, failure: Failure, request_id: str, detail: str = "") -> bytes:
    """The JSON body of `failure` in `surface`'s shape (`detail` is appended to the message)."""
    shape = _SHAPES[failure]
    if surface == "anthropic":
        return orjson.dumps(
            {
                "type": "error",
                "error": {
                    "type": shape.anthropic_type,
                    "message": shape.anthropic_message + detail,
                },
                "request_id": request_id,
            }
        )
    message = shape.openai_message + detail
    if surface == "openrouter":
        return orjson.dumps({"error": {"code": shape.status, "message": message}})
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": shape.openai_type,
                "param": None,
                "code": shape.openai_code,
            }
        }
    )


STREAM_MESSAGE = "mock mid-stream error"

OPENAI_STREAM_ERROR = (
    b'data: {"error":{"message":"mock mid-stream error","type":"server_error",'
    b'"param":null,"code":null}}\n\n'
)
OPENROUTER_STREAM_ERROR = b'data: {"error":{"code":502,"message":"mock mid-stream error"}}\n\n'
ANTHROPIC_STREAM_ERROR = (
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
    b'"message":"Overloaded"}}\n\n'
)


def responses_stream_error(sequence_number: int) -> bytes:
    """The Responses API's own mid-stream error event (a named `error` event)."""
    data = orjson.dumps(
        {
            "type": "error",
            "code": "server_error",
            "message": STREAM_MESSAGE,
            "param": None,
            "sequence_number": sequence_number,
        }
    )
    return b"event: error\ndata: " + data + b"\n\n"


def has_key(request: web.Request) -> bool:
    """Whether the request carries some API key (the mock accepts any)."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return True
    return bool(request.headers.get("x-api-key", "").strip())
