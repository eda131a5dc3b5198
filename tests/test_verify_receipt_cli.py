"""`recovea verify-receipt` end to end: the CLI as a subprocess, on files, stdin and a keys URL."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovea_proxy.meter import verify
from recovea_proxy.meter.verify_inputs import read_ledger
from tests.receipt_support import (
    CHAT_JSON,
    CHAT_STREAM,
    CHAT_STREAM_NO_USAGE,
    REQUEST,
    Signer,
    chain_payloads,
    export,
    keys_doc,
    payload,
    sha,
)
from tests.verify_cli_support import cli, write_files


@pytest.fixture
def files(tmp_path: Path, signer: Signer) -> dict[str, Path]:
    """A keys file with the signer's key (and a retired one), a request and a response."""
    return write_files(tmp_path, signer)


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
        "chain_start: ok (seq 1, prev is 64 zeros)",
        "chain_end: ok (seq 5, the export's last_seq)",
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


def test_ledger_formats(signer: Signer, tmp_path: Path) -> None:
    """An export, a list of exports (pages: the first page's first_seq, the last page's
    last_seq), a list of tokens, and token lines all load."""
    tokens = [signer.token(p) for p in chain_payloads(signer, 4)]
    expected = [verify.decode_token(t) for t in tokens]
    forms = {
        "export.json": (json.dumps(export(tokens)), (1, 4)),
        "pages.json": (
            json.dumps(
                [
                    export(tokens[:2], last_seq=3),
                    export(tokens[2:], start=3, first_seq=2, last_seq=4),
                ]
            ),
            (1, 4),
        ),
        "tokens.json": (json.dumps(tokens), (None, None)),
        "tokens.txt": ("\n".join(tokens) + "\n", (None, None)),
    }
    for name, (text, stated) in forms.items():
        (tmp_path / name).write_text(text)
        ledger = read_ledger(str(tmp_path / name))
        assert ledger.receipts == expected, name
        assert (ledger.first_seq, ledger.last_seq) == stated, name


# --- where a chain starts and ends ----------------------------------------------------


