"""OpenRouter: OpenAI's wire format under `/api/v1`, usage always reported.

OpenRouter returns usage in every response (streamed: the last chunk), so nothing
is added to the request and nothing removed from the stream. Its errors may arrive
with HTTP 200, in the body or as an SSE data event; the OpenAI parsers mark those.
"""

from __future__ import annotations

from typing import Any

from recovea_proxy.providers.base import StreamFilter
from recovea_proxy.providers.openai import OpenAI


class OpenRouter(OpenAI):
    """openrouter.ai/api."""

    name = "openrouter"
    request_id_header = b"x-generation-id"
    error_shape = "openai"

    def prepare_request(self, kind: str, parsed: dict[str, Any], body: bytes) -> tuple[bytes, bool]:
        return body, False

    def stream_filter(self) -> StreamFilter | None:
        return None


PROVIDER = OpenRouter()
