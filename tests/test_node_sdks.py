"""The official Node SDKs (openai, @anthropic-ai/sdk) work through the gateway unchanged.

They bring their own HTTP stack (fetch) and SSE parser. The packages are installed
from npm into tests/node on first use; without node/npm the test is skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support import Gateway

NODE_DIR = Path(__file__).parent / "node"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm not installed"
)


@pytest.fixture(scope="module")
def node_sdks() -> Path:
    if not (NODE_DIR / "node_modules" / "openai").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
            capture_output=True,
        )
    return NODE_DIR


def test_node_openai_and_anthropic_sdks(node_sdks: Path, gateway: Gateway) -> None:
    """Chat (JSON and stream), Anthropic messages and models, a multipart upload and a
    401 behave as against the provider."""
    out = subprocess.run(
        ["node", "drive.mjs", gateway.url], cwd=node_sdks, capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()
    result = orjson.loads(out.stdout)
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
