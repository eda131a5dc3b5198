"""Uploads (multipart, binary: any body that is not JSON) are streamed to the provider
as they arrive, hashed on the way for the receipt, bounded by `RECOVEA_MAX_UPLOAD_MB`
and never held whole: a 100 MB upload goes through while the gateway's peak memory
grows by far less."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from recovea_proxy.meter import verify
from tests.conftest import FAKE_OPENAI_KEY
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, MockServer, metric_value, wait_until

MIB = 1024 * 1024
BOUNDARY = "recoveaUploadBoundary7f3a"
PIECE = bytes(range(256)) * 4096  # 1 MiB, not all one byte


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "uploads")


@pytest.fixture(scope="module")
def small_gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    """A gateway whose uploads may be 8 MiB at most."""
    gw = Gateway(
        {
            **db_env,
            "RECOVEA_UPSTREAM_OPENAI": mock.url,
            "RECOVEA_UPSTREAM_ANTHROPIC": mock.url,
            "RECOVEA_MAX_UPLOAD_MB": "8",
        },
        workdir,
    )
    yield gw
    gw.stop()


def multipart(file_mib: int) -> tuple[Callable[[], Iterator[bytes]], int, str, str]:
    """A files.create body of `file_mib` MiB, produced piece by piece: the producer,
    its length, its SHA-256 and the file part's SHA-256."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def produce() -> Iterator[bytes]:
        yield head
        for _ in range(file_mib):
            yield PIECE
        yield tail

    body_hash, file_hash = hashlib.sha256(), hashlib.sha256()
    for piece in produce():
        body_hash.update(piece)
    for _ in range(file_mib):
        file_hash.update(PIECE)
    length = len(head) + file_mib * MIB + len(tail)
    return produce, length, body_hash.hexdigest(), file_hash.hexdigest()


def _content_type() -> str:
    return f"multipart/form-data; boundary={BOUNDARY}"


def peak_rss_kib(gateway: Gateway) -> int:
    """The gateway process's peak resident memory so far (VmHWM, KiB)."""
    with open(f"/proc/{gateway.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _last_upload(mock: MockServer) -> dict[str, Any]:
    uploads = [e for e in mock.requests() if e["path"] == "/v1/files" and e["method"] == "POST"]
    upload: dict[str, Any] = uploads[-1]["upload"]
    return upload


def test_a_100_mb_upload_streams_through_in_bounded_memory(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """Every byte arrives unchanged, the receipt carries the body's digest and length,
    and the gateway's peak memory grows by far less than the upload."""
    produce, length, body_sha, file_sha = multipart(100)
    # warm the path (first request costs imports and pools), then take the peak
    httpx.post(
        f"{gateway.url}/v1/files",
        content=b"".join(multipart(1)[0]()),
        headers={**tenant.bearer, "content-type": _content_type()},
        timeout=60,
    ).raise_for_status()
    before = peak_rss_kib(gateway)
    response = httpx.post(
        f"{gateway.url}/v1/files",
        content=produce(),
        headers={
            **tenant.bearer,
            "content-type": _content_type(),
            "content-length": str(length),
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    growth_mib = (peak_rss_kib(gateway) - before) / 1024
    assert growth_mib < 30, f"peak memory grew by {growth_mib:.0f} MiB for a 100 MiB upload"
    assert response.json()["bytes"] == 100 * MIB
    upload = _last_upload(mock)
    assert (upload["bytes"], upload["sha256"], upload["filename"]) == (
        100 * MIB,
        file_sha,
        "big.jsonl",
    )
    assert upload["fields"] == {"purpose": "batch"}
    receipt = verify.decode_token(response.headers["recovea-receipt"])
    assert receipt.payload["request_sha256"] == body_sha
    row = stored(gateway, tenant, "receipts", response.headers["x-request-id"])
    assert row["token"] == response.headers["recovea-receipt"]


def test_the_openai_sdk_uploads_a_file_over_the_json_body_limit(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """`files.create` with 40 MiB (over the 32 MiB JSON body bound) goes through the
    official SDK; the provider key reaches the provider, the rcv_ key does not."""
    content = PIECE * 40
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=0) as client:
        created = client.files.create(file=("train.jsonl", content), purpose="fine-tune")
    assert (created.bytes, created.purpose) == (len(content), "fine-tune")
    upload = _last_upload(mock)
    assert upload["sha256"] == hashlib.sha256(content).hexdigest()
    [entry] = [e for e in mock.requests() if e.get("upload") == upload]
    assert entry["headers"]["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    assert tenant.key not in str(entry["headers"])


def test_a_declared_length_over_the_bound_is_refused_before_the_provider(
    small_gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """413 `request_too_large` in OpenAI's shape; nothing reaches the provider."""
    mock.clear()
    produce, length, _, _ = multipart(9)
    response = httpx.post(
        f"{small_gateway.url}/v1/files",
        content=produce(),
        headers={**tenant.bearer, "content-type": _content_type(), "content-length": str(length)},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert "Upload is larger than 8 MB" in response.json()["error"]["message"]
    assert mock.requests() == []


def test_a_chunked_upload_that_outgrows_the_bound_gets_413(
    small_gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """Without a declared length the bound is counted as the bytes pass: the upload is
    cut upstream and the client gets the same 413 (its row says so)."""
    mock.clear()
    produce, _, _, _ = multipart(12)
    with httpx.Client(timeout=60) as client:
        try:
            response = client.post(
                f"{small_gateway.url}/v1/files",
                content=produce(),  # no content-length: chunked
                headers={**tenant.bearer, "content-type": _content_type()},
            )
        except httpx.TransportError:
            response = None  # the gateway may close while the client still writes
    if response is not None:
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        row = stored(small_gateway, tenant, "requests", response.headers["x-request-id"])
        assert row["status"] == "error"
    wait_until(
        lambda: (
            metric_value(
                small_gateway.metrics(), "recovea_requests_total", route="/v1/files/*", status="413"
            )
            >= 1
        ),
        10,
        "the 413 counted",
    )
    uploads = [e for e in mock.requests() if e["path"] == "/v1/files"]
    assert all("upload" not in e or e["upload"]["bytes"] <= 8 * MIB for e in uploads)


def test_a_client_leaving_mid_upload_is_recorded_and_the_gateway_goes_on(
    gateway: Gateway, tenant: Tenant
) -> None:
    """A cut upload leaves a row with an unknown outcome (client gone), not an error
    the provider caused; the next request is served."""
    produce, length, _, _ = multipart(20)
    pieces = produce()
    head = (
        "POST /v1/files HTTP/1.1\r\nhost: gateway\r\n"
        f"authorization: Bearer {tenant.key}\r\ncontent-type: {_content_type()}\r\n"
        f"content-length: {length}\r\nx-recovea-trace-id: upload-gone-4411\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(head)
        for _ in range(3):
            sock.sendall(next(pieces))
    logged = wait_until(
        lambda: next(
            (
                line
                for line in gateway.log_lines()
                if line.get("event") == "request" and line.get("trace_id") == "upload-gone-4411"
            ),
            None,
        ),
        15,
        "the cut upload's log line",
    )
    assert logged["client_gone"] is True
    assert logged.get("error_code") in (None, "client_gone")
    ok = httpx.get(f"{gateway.url}/v1/models", headers=tenant.bearer, timeout=10)
    assert ok.status_code == 200


def test_json_bodies_keep_their_own_bound(small_gateway: Gateway, tenant: Tenant) -> None:
    """Only non-JSON bodies are uploads: a JSON body is still read whole, parsed, and
    bounded by `RECOVEA_MAX_BODY_MB`, whatever the upload bound."""
    response = httpx.post(
        f"{small_gateway.url}/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "a json body is not an upload"}],
        },
        headers=tenant.bearer,
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


def test_curl_uploads_a_file_with_expect_100_continue(
    gateway: Gateway, tenant: Tenant, mock: MockServer, tmp_path: Path
) -> None:
    """curl's own multipart upload (it sends `Expect: 100-continue` for a body this
    size) arrives whole and unchanged."""
    content = PIECE * 6
    path = tmp_path / "batch.jsonl"
    path.write_bytes(content)
    done = subprocess.run(
        [
            "curl", "-sS", "--fail-with-body", "-v",
            "-H", f"authorization: Bearer {tenant.key}",
            "-F", "purpose=batch", "-F", f"file=@{path}",
            f"{gateway.url}/v1/files",
        ],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert b"100 Continue" in done.stderr
    assert orjson.loads(done.stdout)["bytes"] == len(content)
    assert _last_upload(mock)["sha256"] == hashlib.sha256(content).hexdigest()


def test_a_forms_model_field_is_recorded_and_a_files_bytes_are_not_read_as_one(
    gateway: Gateway, tenant: Tenant
) -> None:
    """The `model` field of a multipart form (transcriptions, image edits name their
    model there) is the row's model; a `model` field inside a file's bytes is not."""
    response = httpx.post(
        f"{gateway.url}/v1/files",
        data={"model": "gpt-4o-transcribe", "purpose": "batch"},
        files={"file": ("a.wav", b"RIFF" + b"\x00" * 4096, "audio/wav")},
        headers=tenant.bearer,
        timeout=30,
    )
    assert response.status_code == 200
    assert gateway.record(response.headers["x-request-id"])["baseline_model"] == (
        "gpt-4o-transcribe"
    )
    inside_file = b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nnot-a-model\r\n'
    response = httpx.post(
        f"{gateway.url}/v1/files",
        files={"file": ("b.txt", inside_file, "text/plain")},
        headers=tenant.bearer,
        timeout=30,
    )
    assert response.status_code == 200
    assert gateway.record(response.headers["x-request-id"])["baseline_model"] is None


def test_a_forms_stream_field_marks_the_row_streamed(gateway: Gateway, tenant: Tenant) -> None:
    """`stream=true` in a form (a streamed transcription) is the row's `stream`; a form
    without a file part is read to its end."""
    response = httpx.post(
        f"{gateway.url}/v1/files",
        files={"model": (None, "gpt-4o-mini-transcribe"), "stream": (None, "true")},
        headers=tenant.bearer,
        timeout=30,
    )
    assert response.status_code == 200
    logged = gateway.record(response.headers["x-request-id"])
    assert (logged["baseline_model"], logged["stream"]) == ("gpt-4o-mini-transcribe", True)
