"""`recovea verify-receipt`: receipts, keys and chains built here with `cryptography`
directly, following the receipt format, then checked by the verifier module and CLI."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from recovea_proxy.meter import verify
from recovea_proxy.meter.verify import MalformedError, VerifyError
from recovea_proxy.meter.verify_cli import read_ledger

REPO = Path(__file__).resolve().parent.parent
ZEROS = "0" * 64


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Signer:
    """One Ed25519 receipt key, as the gateway would hold it."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.kid = "rk_" + sha(self.raw)[:16]

    def entry(self, kid: str | None = None, retired: bool = False) -> dict[str, Any]:
        return {
            "kid": kid or self.kid,
            "alg": "Ed25519",
            "public_key": b64(self.raw),
            "created_at": "2026-11-01T00:00:00+00:00",
            "retired_at": "2026-11-20T00:00:00+00:00" if retired else None,
        }

    def token(self, payload: dict[str, Any]) -> str:
        body = canonical(payload)
        return b64(body) + "." + b64(self.private.sign(body))


def keys_doc(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(entries)}


REQUEST = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"h\xc3\xa9llo"}]}'
CHAT_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
CHAT_JSON = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": CHAT_USAGE,
    }
).encode()


def sse(*events: Any, done: bool = False) -> bytes:
    """SSE bytes: each event a dict (data only) or an (event name, dict) pair."""
    out = b""
    for event in events:
        name, data = event if isinstance(event, tuple) else (None, event)
        out += f"event: {name}\n".encode() if name else b""
        out += b"data: " + json.dumps(data).encode() + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def chat_chunk(content: str | None, usage: Any = None, **extra: Any) -> dict[str, Any]:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    return {"object": "chat.completion.chunk", "choices": choices, "usage": usage, **extra}


CHAT_STREAM = sse(chat_chunk("h"), chat_chunk("i"), chat_chunk(None, CHAT_USAGE), done=True)
CHAT_STREAM_NO_USAGE = sse(
    {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
    done=True,
)
RESPONSES_USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 17,
}
RESPONSES_JSON = json.dumps({"object": "response", "status": "completed", "usage": RESPONSES_USAGE})
RESPONSES_STREAM = sse(
    ("response.created", {"type": "response.created", "response": {"usage": None}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "hi"}),
    (
        "response.completed",
        {"type": "response.completed", "response": {"usage": RESPONSES_USAGE}},
    ),
)
ANTHROPIC_USAGE = {
    "input_tokens": 6,
    "cache_creation_input_tokens": 2,
    "cache_read_input_tokens": 4,
    "output_tokens": 5,
}
ANTHROPIC_JSON = json.dumps({"type": "message", "role": "assistant", "usage": ANTHROPIC_USAGE})
ANTHROPIC_STREAM = sse(
    (
        "message_start",
        {"type": "message_start", "message": {"usage": {**ANTHROPIC_USAGE, "output_tokens": 1}}},
    ),
    ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "hi"}}),
    ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 3}}),
    ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 5}}),
    ("message_stop", {"type": "message_stop"}),
)
OPENAI_COUNTS: dict[str, int | None] = {
    "input_tokens": 12,
    "output_tokens": 5,
    "cached_tokens": 4,
    "reasoning_tokens": 2,
}
ANTHROPIC_COUNTS = {**OPENAI_COUNTS, "reasoning_tokens": None}
USAGE_CASES: dict[str, tuple[bytes, dict[str, int | None]]] = {
    "openai chat json": (CHAT_JSON, OPENAI_COUNTS),
    "openai chat stream": (CHAT_STREAM, OPENAI_COUNTS),
    "openai responses json": (RESPONSES_JSON.encode(), OPENAI_COUNTS),
    "openai responses stream": (RESPONSES_STREAM, OPENAI_COUNTS),
    "anthropic json": (ANTHROPIC_JSON.encode(), ANTHROPIC_COUNTS),
    "anthropic stream": (ANTHROPIC_STREAM, ANTHROPIC_COUNTS),
}


def payload(signer: Signer, **fields: Any) -> dict[str, Any]:
    """A complete, consistent receipt payload for REQUEST and CHAT_JSON."""
    return {
        "v": "recovea-receipt-v1",
        "kid": signer.kid,
        "request_id": uuid.uuid4().hex,
        "ts": 1_795_000_000_123,
        "customer_id": str(uuid.uuid4()),
        "rcv_key_id": str(uuid.uuid4()),
        "provider": "openai",
        "baseline_model": "gpt-4o-mini",
        "realized_model": "gpt-4o-mini-2024-07-18 ü",
        **OPENAI_COUNTS,
        "cache_hit": False,
        "status": "success",
        "request_sha256": sha(REQUEST),
        "response_sha256": sha(CHAT_JSON),
        "chain": "c" * 32,
        "seq": 1,
        "prev": ZEROS,
        **fields,
    }


def chain_payloads(signer: Signer, count: int, chain: str = "a" * 32) -> list[dict[str, Any]]:
    payloads: list[dict[str, Any]] = []
    prev = ZEROS
    for seq in range(1, count + 1):
        payloads.append(payload(signer, chain=chain, seq=seq, prev=prev, input_tokens=seq))
        prev = sha(canonical(payloads[-1]))
    return payloads


def receipts(signer: Signer, payloads: list[dict[str, Any]]) -> list[verify.Receipt]:
    return [verify.decode_token(signer.token(p)) for p in payloads]


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def files(tmp_path: Path, signer: Signer) -> dict[str, Path]:
    """A keys file with the signer's key (and a retired one), a request and a response."""
    paths = {name: tmp_path / name for name in ("keys.json", "request.json", "response.json")}
    doc = keys_doc(Signer().entry(retired=True), signer.entry())
    paths["keys.json"].write_text(json.dumps(doc))
    paths["request.json"].write_bytes(REQUEST)
    paths["response.json"].write_bytes(CHAT_JSON)
    return paths


def cli(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recovea_proxy.meter.verify_cli", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )


# --- end to end through the CLI -------------------------------------------------------


def test_json_response_with_header_token_verifies(signer: Signer, files: dict[str, Path]) -> None:
    """A receipt, its request and its JSON response check out line by line; exit 0."""
    token = signer.token(payload(signer))
    done = cli(
        token,
        "--keys",
        files["keys.json"],
        "--request",
        files["request.json"],
        "--response",
        files["response.json"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"signature: ok (kid {signer.kid})",
        "request_sha256: ok",
        "response_sha256: ok",
        "tokens: match",
        "receipt OK",
    ]


def test_sse_response_carries_its_own_receipt(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    """With no TOKEN the receipt comes from the stream's last line, which is not hashed."""
    token = signer.token(payload(signer, response_sha256=sha(CHAT_STREAM)))
    response = tmp_path / "stream.sse"
    response.write_bytes(CHAT_STREAM + b": recovea-receipt-v1 " + token.encode() + b"\n\n")
    done = cli(
        "--keys", files["keys.json"], "--request", files["request.json"], "--response", response
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "response_sha256: ok" in done.stdout
    assert "tokens: match" in done.stdout
    assert done.stdout.endswith("receipt OK\n")


def test_token_from_stdin_and_json_output(signer: Signer, files: dict[str, Path]) -> None:
    """`-` reads the token from stdin; --json prints one object with every check."""
    token = signer.token(payload(signer))
    done = cli(
        "-",
        "--keys",
        files["keys.json"],
        "--response",
        files["response.json"],
        "--json",
        stdin=token + "\n",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["error"] is None
    assert report["checks"]["signature"] == {"ok": True, "result": f"ok (kid {signer.kid})"}
    assert report["checks"]["tokens"] == {"ok": True, "result": "match"}


def test_stream_without_usage_is_not_checkable(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    """A stream where the client did not ask for usage: a warning, not a failure."""
    token = signer.token(payload(signer, response_sha256=sha(CHAT_STREAM_NO_USAGE)))
    response = tmp_path / "stream.sse"
    response.write_bytes(CHAT_STREAM_NO_USAGE + b": recovea-receipt-v1 " + token.encode() + b"\n\n")
    done = cli("--keys", files["keys.json"], "--response", response)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tokens: not checkable (the response carries no usage)" in done.stdout
    assert "receipt OK" in done.stdout


def test_changed_request_fails(signer: Signer, files: dict[str, Path]) -> None:
    """One byte changed in the request file: request_sha256 fails, exit 1."""
    files["request.json"].write_bytes(REQUEST.replace(b"mini", b"mino"))
    done = cli(
        signer.token(payload(signer)),
        "--keys",
        files["keys.json"],
        "--request",
        files["request.json"],
    )
    assert done.returncode == 1
    assert "FAILED: request_sha256: request_sha256 does not match the request file" in done.stdout


def test_changed_response_fails(signer: Signer, files: dict[str, Path]) -> None:
    """A response file that is not the one received: response_sha256 fails, exit 1."""
    files["response.json"].write_bytes(CHAT_JSON + b"\n")
    done = cli(
        signer.token(payload(signer)),
        "--keys",
        files["keys.json"],
        "--response",
        files["response.json"],
    )
    assert done.returncode == 1
    assert (
        "response_sha256: FAILED (response_sha256 does not match the response file)" in done.stdout
    )
    assert "FAILED: response_sha256:" in done.stdout


def test_token_counts_differ_from_response_cli(signer: Signer, files: dict[str, Path]) -> None:
    """The receipt claims more output tokens than the provider reported: exit 1."""
    token = signer.token(payload(signer, output_tokens=6))
    done = cli(token, "--keys", files["keys.json"], "--response", files["response.json"])
    assert done.returncode == 1
    assert (
        "FAILED: tokens: output_tokens is 6 in the receipt but 5 in the response usage"
        in done.stdout
    )


def test_unknown_key_fails(signer: Signer, files: dict[str, Path]) -> None:
    """A token signed by a key the keys document does not hold: exit 1."""
    stranger = Signer()
    done = cli(stranger.token(payload(stranger)), "--keys", files["keys.json"])
    assert done.returncode == 1
    assert f"FAILED: signature: no key {stranger.kid} in the keys" in done.stdout


def test_key_published_under_another_kid_is_refused(signer: Signer, tmp_path: Path) -> None:
    """A keys file that puts a foreign key under the signer's kid is refused for that kid."""
    forger = Signer()
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(keys_doc(forger.entry(kid=signer.kid))))
    token = forger.token(payload(signer))  # names the signer's kid, signed by the forger
    done = cli(token, "--keys", keys)
    assert done.returncode == 1
    assert (
        f"FAILED: signature: key {signer.kid} was refused: "
        "its kid does not match the hash of its public key"
    ) in done.stdout


def test_ledger_only(signer: Signer, files: dict[str, Path], tmp_path: Path) -> None:
    """A ledger export alone is checked as a chain."""
    tokens = [signer.token(p) for p in chain_payloads(signer, 5)]
    ledger = tmp_path / "ledger.json"
    ledger.write_text(json.dumps(export(tokens)))
    done = cli("--keys", files["keys.json"], "--ledger", ledger)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"ledger: ok (chain {'a' * 32}, seq 1..5, 5 receipts)",
        "ledger OK",
    ]


def test_ledger_with_a_gap_fails_cli(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    tokens = [signer.token(p) for p in chain_payloads(signer, 5)]
    del tokens[2]
    ledger = tmp_path / "ledger.txt"
    ledger.write_text("\n".join(tokens) + "\n")
    done = cli("--keys", files["keys.json"], "--ledger", ledger)
    assert done.returncode == 1
    assert "FAILED: ledger: seq 4 follows seq 2 (gap)" in done.stdout


class KeysHandler(http.server.BaseHTTPRequestHandler):
    document = b""

    def do_GET(self) -> None:
        found = self.path == "/.well-known/recovea-receipt-keys"
        self.send_response(200 if found else 404)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.document if found else b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def keys_server(signer: Signer) -> Iterator[str]:
    """A loopback server publishing the signer's key at the well-known path."""
    handler = type(
        "Handler", (KeysHandler,), {"document": json.dumps(keys_doc(signer.entry())).encode()}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_keys_from_a_gateway_root_url(signer: Signer, keys_server: str) -> None:
    """--keys http://host:port fetches /.well-known/recovea-receipt-keys."""
    done = cli(signer.token(payload(signer)), "--keys", keys_server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"signature: ok (kid {signer.kid})" in done.stdout


def test_unreachable_keys_url_is_bad_input(signer: Signer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    done = cli(signer.token(payload(signer)), "--keys", f"http://127.0.0.1:{port}")
    assert done.returncode == 2
    assert (
        f"cannot fetch keys from http://127.0.0.1:{port}/.well-known/recovea-receipt-keys"
        in done.stderr
    )


def test_no_receipt_is_a_usage_error(files: dict[str, Path]) -> None:
    done = cli("--keys", files["keys.json"], "--request", files["request.json"])
    assert done.returncode == 2
    assert "no receipt to check" in done.stderr


def test_unreadable_file_is_bad_input(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    done = cli(
        signer.token(payload(signer)), "--keys", files["keys.json"], "--request", tmp_path / "nope"
    )
    assert done.returncode == 2
    assert "cannot read --request file" in done.stderr


def malformed_tokens() -> dict[str, tuple[str, str]]:
    """Token → the message naming why it is not a receipt."""
    signer = Signer()
    good = payload(signer)
    sig = b64(bytes(64))
    return {
        "no dot": ("abcdef", "token is not <payload>.<signature>"),
        "bad base64": ("ab$cd." + sig, "token payload is not valid base64url"),
        "padded base64": (
            b64(canonical(good)) + "==." + sig,
            "token payload is not valid base64url",
        ),
        "short signature": (b64(canonical(good)) + "." + b64(b"x" * 10), "not 64 bytes"),
        "not json": (b64(b"not json") + "." + sig, "token payload is not UTF-8 JSON"),
        "not an object": (b64(b"[1,2]") + "." + sig, "token payload is not a JSON object"),
        "float": (signer.token({**good, "ts": 1.5}), "non-integer number (1.5)"),
        "spaces": (
            b64(json.dumps(good, sort_keys=True, ensure_ascii=False).encode()) + "." + sig,
            "token payload is not canonical JSON",
        ),
        "unsorted": (
            b64(json.dumps(dict(reversed(good.items())), separators=(",", ":")).encode())
            + "."
            + sig,
            "token payload is not canonical JSON",
        ),
        "ascii escaped": (
            b64(json.dumps(good, sort_keys=True, separators=(",", ":")).encode()) + "." + sig,
            "token payload is not canonical JSON",
        ),
        "missing field": (
            signer.token({k: v for k, v in good.items() if k != "prev"}),
            "receipt is missing prev",
        ),
        "unknown field": (signer.token({**good, "extra": 1}), "receipt has unknown fields extra"),
        "wrong type": (signer.token({**good, "seq": "1"}), "receipt field seq has the wrong type"),
    }


MALFORMED = malformed_tokens()


@pytest.mark.parametrize("case", ["no dot", "bad base64", "not json", "float", "spaces"])
def test_malformed_token_exits_2(case: str, files: dict[str, Path]) -> None:
    token, message = MALFORMED[case]
    done = cli(token, "--keys", files["keys.json"])
    assert done.returncode == 2
    assert message in done.stderr


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_token_is_rejected(case: str) -> None:
    token, message = MALFORMED[case]
    with pytest.raises(MalformedError, match=re.escape(message)):
        verify.decode_token(token)


# --- signatures -----------------------------------------------------------------------


def tampered(field: str, value: Any, other_kid: str) -> Any:
    """A different value of the same type (another published kid for `kid`)."""
    if field == "kid":
        return other_kid
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value and value[-1] in "0123456789abcdef" and field != "v":
        return value[:-1] + ("1" if value[-1] == "0" else "0")
    return value + "x"


@pytest.mark.parametrize("field", sorted(payload(Signer())))
def test_every_field_is_signed(field: str, signer: Signer) -> None:
    """Changing any one field under the old signature breaks the signature."""
    other = Signer()
    keys = verify.load_keys(keys_doc(signer.entry(), other.entry()))
    original = payload(signer)
    token = signer.token(original)
    changed = {**original, field: tampered(field, original[field], other.kid)}
    assert changed != original
    forged = b64(canonical(changed)) + "." + token.split(".")[1]
    receipt = verify.decode_token(forged)
    with pytest.raises(VerifyError, match=f"^signature does not verify with key {changed['kid']}$"):
        verify.check_signature(receipt, keys)


def test_valid_signature_names_its_key(signer: Signer) -> None:
    keys = verify.load_keys(json.dumps(keys_doc(signer.entry(retired=True))).encode())
    receipt = verify.decode_token(signer.token(payload(signer)))
    assert verify.check_signature(receipt, keys) == signer.kid


def test_flipped_signature_byte(signer: Signer) -> None:
    keys = verify.load_keys(keys_doc(signer.entry()))
    body, sig = signer.token(payload(signer)).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 0x01
    receipt = verify.decode_token(body + "." + b64(bytes(raw)))
    with pytest.raises(VerifyError, match=f"signature does not verify with key {signer.kid}"):
        verify.check_signature(receipt, keys)


def test_keys_document_rejects_mismatched_kid_only_for_that_key(signer: Signer) -> None:
    """A bad entry is refused; the document's other keys still verify."""
    other = Signer()
    keys = verify.load_keys(keys_doc(other.entry(kid="rk_" + "0" * 16), signer.entry()))
    assert set(keys) == {signer.kid}
    assert keys.rejected == {"rk_" + "0" * 16: "its kid does not match the hash of its public key"}


def test_keys_document_that_is_not_one() -> None:
    with pytest.raises(MalformedError, match='keys document has no "keys" list'):
        verify.load_keys(b'{"kid": "rk_1"}')
    with pytest.raises(MalformedError, match="keys document is not JSON"):
        verify.load_keys(b"<html>")


# --- request, response and usage ------------------------------------------------------


def test_request_hash(signer: Signer) -> None:
    receipt = verify.decode_token(signer.token(payload(signer)))
    verify.check_request(receipt, REQUEST)
    with pytest.raises(VerifyError, match=r"^request_sha256 does not match the request file$"):
        verify.check_request(receipt, REQUEST[:-1] + b"]")


def test_response_receipt_line_is_stripped_before_hashing(signer: Signer) -> None:
    token = signer.token(payload(signer, response_sha256=sha(ANTHROPIC_STREAM)))
    body = ANTHROPIC_STREAM + b": recovea-receipt-v1 " + token.encode() + b"\n\n"
    assert verify.receipt_from_response(body) == token
    assert verify.receipt_from_response(ANTHROPIC_STREAM) is None
    receipt = verify.decode_token(token)
    assert verify.check_response(receipt, body) == ANTHROPIC_STREAM
    with pytest.raises(VerifyError, match=r"^response_sha256 does not match the response file$"):
        verify.check_response(receipt, body.replace(b"hi", b"ho"))


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_matches(case: str, signer: Signer) -> None:
    body, counts = USAGE_CASES[case]
    receipt = verify.decode_token(signer.token(payload(signer, **counts)))
    assert verify.check_usage(receipt, body) == "match"


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_mismatch_fails(case: str, signer: Signer) -> None:
    """One count off, or null where the provider reported a number: the check fails."""
    body, counts = USAGE_CASES[case]
    more = verify.decode_token(signer.token(payload(signer, **{**counts, "input_tokens": 13})))
    with pytest.raises(VerifyError, match=r"^input_tokens is 13 in the receipt but 12 in the"):
        verify.check_usage(more, body)
    unreported = verify.decode_token(
        signer.token(payload(signer, **{**counts, "cached_tokens": None}))
    )
    with pytest.raises(VerifyError, match=r"^cached_tokens is None in the receipt but 4 in the"):
        verify.check_usage(unreported, body)


def test_anthropic_reports_no_reasoning_count(signer: Signer) -> None:
    receipt = verify.decode_token(
        signer.token(payload(signer, **{**ANTHROPIC_COUNTS, "reasoning_tokens": 0}))
    )
    with pytest.raises(VerifyError, match=r"^reasoning_tokens is 0 in the receipt but None in the"):
        verify.check_usage(receipt, ANTHROPIC_JSON.encode())


def test_usage_after_receipt_line_and_without_usage(signer: Signer) -> None:
    token = signer.token(payload(signer))
    receipt = verify.decode_token(token)
    line = b": recovea-receipt-v1 " + token.encode() + b"\n\n"
    assert verify.check_usage(receipt, CHAT_STREAM + line) == "match"
    assert verify.check_usage(receipt, CHAT_STREAM_NO_USAGE + line) == "not checkable"
    assert verify.check_usage(receipt, b"") == "not checkable"


# --- chains ---------------------------------------------------------------------------


def test_valid_chain(signer: Signer) -> None:
    keys = verify.load_keys(keys_doc(signer.entry()))
    verify.check_chain(receipts(signer, chain_payloads(signer, 5)), keys)


def test_page_starting_at_seq_3_passes(signer: Signer) -> None:
    keys = verify.load_keys(keys_doc(signer.entry()))
    verify.check_chain(receipts(signer, chain_payloads(signer, 5)[2:]), keys)


def test_chain_signed_across_a_key_rotation(signer: Signer) -> None:
    """Receipts from a retired key and its successor verify as one chain."""
    after = Signer()
    payloads = chain_payloads(signer, 4)
    payloads[2:] = [{**p, "kid": after.kid} for p in payloads[2:]]
    payloads[2]["prev"] = sha(canonical(payloads[1]))
    payloads[3]["prev"] = sha(canonical(payloads[2]))
    chain = receipts(signer, payloads[:2]) + receipts(after, payloads[2:])
    keys = verify.load_keys(keys_doc(signer.entry(retired=True), after.entry()))
    verify.check_chain(chain, keys)


def chain_error(signer: Signer, chain: list[verify.Receipt]) -> str:
    keys = verify.load_keys(keys_doc(signer.entry()))
    with pytest.raises(VerifyError) as caught:
        verify.check_chain(chain, keys)
    return str(caught.value)


def test_removed_receipt_is_a_gap(signer: Signer) -> None:
    chain = receipts(signer, chain_payloads(signer, 5))
    del chain[2]
    assert chain_error(signer, chain) == "seq 4 follows seq 2 (gap)"


def test_swapped_receipts_are_out_of_order(signer: Signer) -> None:
    chain = receipts(signer, chain_payloads(signer, 5))
    chain[2], chain[3] = chain[3], chain[2]
    assert chain_error(signer, chain) == "seq 3 follows seq 4 (out of order)"


def test_duplicated_receipt(signer: Signer) -> None:
    chain = receipts(signer, chain_payloads(signer, 3))
    chain.insert(2, chain[1])
    assert chain_error(signer, chain) == "seq 2 follows seq 2 (duplicate)"


def test_edited_and_resigned_receipt_breaks_the_next_prev(signer: Signer) -> None:
    payloads = chain_payloads(signer, 5)
    payloads[2]["output_tokens"] = 1
    assert chain_error(signer, receipts(signer, payloads)) == (
        "receipt seq 4: prev does not match the hash of seq 3"
    )


def test_edited_receipt_without_the_key_breaks_its_signature(signer: Signer) -> None:
    tokens = [signer.token(p) for p in chain_payloads(signer, 5)]
    changed = {
        **json.loads(base64.urlsafe_b64decode(tokens[2].split(".")[0] + "==")),
        "output_tokens": 1,
    }
    tokens[2] = b64(canonical(changed)) + "." + tokens[2].split(".")[1]
    chain = [verify.decode_token(t) for t in tokens]
    assert (
        chain_error(signer, chain)
        == f"receipt seq 3: signature does not verify with key {signer.kid}"
    )


def test_receipt_from_another_chain(signer: Signer) -> None:
    chain = receipts(signer, chain_payloads(signer, 5))
    chain[2] = receipts(signer, chain_payloads(signer, 5, chain="b" * 32))[2]
    assert chain_error(signer, chain) == f"receipt seq 3 is from chain {'b' * 32}, not {'a' * 32}"


def test_first_receipt_needs_zero_prev(signer: Signer) -> None:
    payloads = chain_payloads(signer, 3)
    payloads[0]["prev"] = "f" * 64
    assert chain_error(signer, receipts(signer, payloads)) == "receipt seq 1: prev is not 64 zeros"


def test_empty_ledger(signer: Signer) -> None:
    assert chain_error(signer, []) == "the ledger holds no receipts"


def export(tokens: list[str], first_seq: int = 1) -> dict[str, Any]:
    return {
        "object": "recovea-chain-v1",
        "chain": "a" * 32,
        "receipts": [
            {"seq": first_seq + i, "request_id": uuid.uuid4().hex, "token": t}
            for i, t in enumerate(tokens)
        ],
        "has_more": False,
        "next_after_seq": None,
    }


def test_ledger_formats(signer: Signer, tmp_path: Path) -> None:
    """An export, a list of exports (pages), a list of tokens, and token lines all load."""
    tokens = [signer.token(p) for p in chain_payloads(signer, 4)]
    expected = [verify.decode_token(t) for t in tokens]
    forms = {
        "export.json": json.dumps(export(tokens)),
        "pages.json": json.dumps([export(tokens[:2]), export(tokens[2:], first_seq=3)]),
        "tokens.json": json.dumps(tokens),
        "tokens.txt": "\n".join(tokens) + "\n",
    }
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        assert read_ledger(str(tmp_path / name)) == expected, name
