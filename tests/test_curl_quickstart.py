"""The README's curl quickstart works as written (curl's own HTTP stack and no SSE parser)."""

from __future__ import annotations

import shutil
import subprocess

import orjson
import pytest

from tests.support import Gateway, without_receipt

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, check=True, timeout=60)


def test_curl_chat_completion(gateway: Gateway) -> None:
    """A plain curl POST gets the completion and the gateway's headers."""
    out = curl(
        "-i",
        f"{gateway.url}/v1/chat/completions",
        "-H",
        "Authorization: Bearer sk-your-openai-key",
        "-H",
        "Content-Type: application/json",
        "-H",
        "X-Recovea-Feature: quickstart",
        "-d",
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}',
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"x-request-id: " in head and b"x-recovea-upstream-request-id: " in head
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "mock reply: Hello"
    request_id = head.split(b"x-request-id: ")[1].split(b"\r\n")[0].decode()
    record = gateway.record(request_id)
    assert record["feature"] == "quickstart"
    assert record["input_tokens"] == 12 and record["output_tokens"] == 16


def test_curl_anthropic_stream(gateway: Gateway) -> None:
    """curl -N on the Anthropic surface streams the events through to message_stop."""
    out = curl(
        "-N",
        f"{gateway.url}/v1/messages",
        "-H",
        "x-api-key: sk-ant-your-key",
        "-H",
        "anthropic-version: 2023-06-01",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"model":"claude-sonnet-5-5","max_tokens":64,"stream":true,'
        '"messages":[{"role":"user","content":"Hello"}]}',
    ).stdout
    assert out.startswith(b"event: message_start")
    assert without_receipt(out).rstrip().endswith(b'data: {"type":"message_stop"}')
