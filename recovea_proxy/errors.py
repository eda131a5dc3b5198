"""The gateway's own error responses, in the shape of the surface the caller used.

OpenAI and OpenRouter surfaces get `{"error": {"message", "type", "param", "code"}}`;
the Anthropic surface gets `{"type": "error", "error": {"type", "message", "code"}}`
(the extra `code` keeps our machine-readable code without breaking the SDK).
Messages never contain a key; callers pass fixed text.
"""

from __future__ import annotations

import orjson

_OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}

_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
}


class GatewayError(Exception):
    """An error the gateway answers itself (before any response byte was sent), with
    any extra response headers it needs (e.g. `retry-after`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(shape: str, status: int, code: str, message: str) -> bytes:
    """The JSON body of a gateway error in `shape` ("openai" or "anthropic")."""
    if shape == "anthropic":
        return orjson.dumps(
            {
                "type": "error",
                "error": {
                    "type": _ANTHROPIC_TYPE.get(status, "api_error"),
                    "message": message,
                    "code": code,
                },
            }
        )
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": _OPENAI_TYPE.get(status, "api_error"),
                "param": None,
                "code": code,
            }
        }
    )


def stream_error_event(shape: str, code: str, message: str) -> bytes:
    """An SSE event that ends a broken stream the way the provider would report it."""
    if shape == "anthropic":
        payload = orjson.dumps(
            {"type": "error", "error": {"type": "api_error", "message": message, "code": code}}
        )
        return b"event: error\ndata: " + payload + b"\n\n"
    payload = orjson.dumps(
        {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
    )
    return b"data: " + payload + b"\n\n"
