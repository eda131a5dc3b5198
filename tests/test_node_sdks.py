"""The official Node SDKs (openai, @anthropic-ai/sdk) work through the gateway unchanged.

They bring their own HTTP stack (fetch) and SSE parser. The packages are installed
from npm into tests/node on first use; without node/npm the test is skipped.
"""

from __future__ import annotations

from pathlib import Path

from tests.node_support import needs_node, run_node
from tests.support import Gateway

pytestmark = needs_node


def test_node_openai_and_anthropic_sdks(node_sdks: Path, gateway: Gateway) -> None:
    """Chat (JSON and stream), Anthropic messages and models, a multipart upload and a
    401 behave as against the provider."""
    result = run_node(node_sdks, "drive.mjs", gateway.url)
    assert result["chat"] == "mock reply: node-chat"
    assert result["streamed"] == "mock reply: node-stream"
    assert result["usageChunks"] == 0, "usage the gateway asked for is hidden from the client"
    assert result["message"] == "mock reply: node-msg"
    assert result["messageOutputTokens"] == 8
    assert result["errorStatus"] == 401
    assert result["anthropicModelTypes"] == ["model"], "Anthropic's model list, not OpenAI's"
    assert result["uploadedBytes"] == 3 * 1024 * 1024
    record = gateway.record(result["chatRequestId"])
    assert (record["input_tokens"], record["output_tokens"]) == (21, 8)
