"""The README's curl quickstart works as written (curl's own HTTP stack and no SSE parser)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.ledger_support import make_tenant, stored
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


def quickstart_block(heading: str) -> list[str]:
    """The sh code blocks under one heading of docs/quickstart.md."""
    text = (Path(__file__).parent.parent / "docs" / "quickstart.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n", 1)[1] for block in section.split("```sh")[1:]]


def test_the_ledger_and_receipt_quickstart_runs_as_written(
    gateway: Gateway, db_env: dict[str, str], tmp_path: Path
) -> None:
    """The docs' read-back and verify commands, run by sh with curl, in order."""
    tenant = make_tenant(db_env, "quickstart-ledger")
    blocks = [
        block.split("```", 1)[0]
        .replace("http://127.0.0.1:8080", gateway.url)
        .replace("rcv_live_…", tenant.key)
        .replace(".venv/bin/recovea", f"{sys.executable} -m recovea_proxy")
        for block in quickstart_block("Read the ledger back, check the receipt")
    ]
    assert len(blocks) == 2
    send, read_back = blocks[0].rstrip().rsplit("\n", 1)
    request_id_line = next(line for line in send.splitlines() if line.startswith("REQUEST_ID="))

    def sh(script: str) -> str:
        done = subprocess.run(
            ["sh", "-c", "set -e\n" + script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **db_env},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    sh(send)
    request_id = (tmp_path / "headers.txt").read_text().lower().split("x-request-id: ")[1][:32]
    stored(gateway, tenant, "requests", request_id)  # written within a flush interval
    row = orjson.loads(sh(request_id_line + "\n" + read_back))
    assert row["request_id"] == request_id
    assert row["customer_id"] == tenant.workspace and row["input_tokens"] is not None
    assert "receipt OK" in sh(blocks[1])
