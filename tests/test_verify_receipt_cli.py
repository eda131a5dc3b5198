"""`recovea verify-receipt` end to end: the CLI as a subprocess, on files, stdin and a keys URL."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovea_proxy.meter import verify
from recovea_proxy.meter.verify_cli import read_ledger
from tests.receipt_support import (
    CHAT_JSON,
    CHAT_STREAM,
    CHAT_STREAM_NO_USAGE,
    HOUR_MS,
    MALFORMED,
    REPO,
    REQUEST,
    RETIRED_MS,
    Signer,
    b64,
    chain_payloads,
    export,
    keys_doc,
    payload,
    sha,
)


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


def write_ledger(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_truncated_head_fails(signer: Signer, files: dict[str, Path], tmp_path: Path) -> None:
    """An export whose first receipts are gone fails, even though what is left links up."""
    tokens = [signer.token(p) for p in chain_payloads(signer, 5)]
    ledger = write_ledger(tmp_path, export(tokens[2:], start=3))
    done = cli("--keys", files["keys.json"], "--ledger", ledger)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"ledger: ok (chain {'a' * 32}, seq 3..5, 3 receipts)" in done.stdout
    assert done.stdout.splitlines()[-1] == (
        "FAILED: chain_start: the ledger starts at seq 3, not 1: its head is missing"
        " (if retention pruned it, accept it with --first-seq 3)"
    )


def test_a_pruned_head_passes_with_first_seq(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    """A chain pruned by retention passes when the user accepts its first seq; the output
    says that the first receipt's prev could not be checked against genesis."""
    tokens = [signer.token(p) for p in chain_payloads(signer, 5)]
    ledger = write_ledger(tmp_path, export(tokens[2:], start=3, first_seq=3))
    done = cli("--keys", files["keys.json"], "--ledger", ledger, "--first-seq", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"ledger: ok (chain {'a' * 32}, seq 3..5, 3 receipts)",
        "chain_start: ok (seq 3, as accepted; its prev cannot be checked against genesis)",
        "chain_end: ok (seq 5, the export's last_seq)",
        "ledger OK",
    ]
    done = cli("--keys", files["keys.json"], "--ledger", ledger, "--first-seq", "2")
    assert done.returncode == 1
    assert "chain_start: FAILED (the ledger starts at seq 3, not at the accepted seq 2)" in (
        done.stdout
    )


def test_a_truncated_tail_fails_against_the_stated_last_seq(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    """Pages given without the last one: the receipts stop before the chain's last_seq."""
    tokens = [signer.token(p) for p in chain_payloads(signer, 6)]
    pages = [export(tokens[:2], last_seq=6), export(tokens[2:4], start=3, last_seq=6)]
    done = cli("--keys", files["keys.json"], "--ledger", write_ledger(tmp_path, pages))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        "FAILED: chain_end: the ledger ends at seq 4 but the export's last_seq is 6:"
        " its tail is missing"
    )
    pages.append(export(tokens[4:], start=5, last_seq=6))
    done = cli("--keys", files["keys.json"], "--ledger", write_ledger(tmp_path, pages))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ledger: ok (chain " + "a" * 32 + ", seq 1..6, 6 receipts)" in done.stdout


def test_the_newest_receipt_proves_a_truncated_tail(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    """An export cut before the client's newest receipt, its last_seq cut to match, links
    up and ends where it says; the receipt the client holds shows the cut."""
    tokens = [signer.token(p) for p in chain_payloads(signer, 5)]
    cut = write_ledger(tmp_path, export(tokens[:3]))
    done = cli("--keys", files["keys.json"], "--ledger", cut)
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli(tokens[-1], "--keys", files["keys.json"], "--ledger", cut)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"signature: ok (kid {signer.kid})",
        f"ledger: ok (chain {'a' * 32}, seq 1..3, 3 receipts)",
        "chain_start: ok (seq 1, prev is 64 zeros)",
        "chain_end: ok (seq 3, the export's last_seq)",
        "in_chain: FAILED (receipt seq 5 is not in the ledger (it ends at seq 3):"
        " its tail is missing)",
        "FAILED: in_chain: receipt seq 5 is not in the ledger (it ends at seq 3):"
        " its tail is missing",
    ]
    whole = write_ledger(tmp_path, export(tokens))
    done = cli(tokens[-1], "--keys", files["keys.json"], "--ledger", whole, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["checks"]["in_chain"] == {"ok": True, "result": f"ok (chain {'a' * 32}, seq 5)"}


def test_a_receipt_from_a_response_is_looked_up_in_the_ledger(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    """The receipt a stream ended with is the one checked against the ledger; a ledger
    holding another receipt at that seq fails."""
    payloads = chain_payloads(signer, 3)
    # the last receipt (no prev depends on it) covers CHAT_STREAM
    payloads[2] |= {"response_sha256": sha(CHAT_STREAM), "input_tokens": 12}
    tokens = [signer.token(p) for p in payloads]
    response = tmp_path / "stream.sse"
    response.write_bytes(CHAT_STREAM + b": recovea-receipt-v1 " + tokens[2].encode() + b"\n\n")
    done = cli(
        "--keys",
        files["keys.json"],
        "--response",
        response,
        "--ledger",
        write_ledger(tmp_path, export(tokens)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"in_chain: ok (chain {'a' * 32}, seq 3)" in done.stdout
    swapped = [*tokens[:2], signer.token({**payloads[2], "output_tokens": 1})]
    done = cli(
        "--keys",
        files["keys.json"],
        "--response",
        response,
        "--ledger",
        write_ledger(tmp_path, export(swapped)),
    )
    assert done.returncode == 1
    assert "in_chain: FAILED (the ledger's seq 3 is not this receipt)" in done.stdout


def test_token_lines_cannot_state_an_end(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    """Token lines say nothing of the chain's end: not checkable, which is not a failure."""
    ledger = tmp_path / "tokens.txt"
    ledger.write_text("\n".join(signer.token(p) for p in chain_payloads(signer, 2)))
    done = cli("--keys", files["keys.json"], "--ledger", ledger)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "chain_end: not checkable (the export states no last_seq; give your newest receipt too)"
        in done.stdout
    )


# --- key validity windows -------------------------------------------------------------


def test_a_retired_key_after_its_window_fails(signer: Signer, tmp_path: Path) -> None:
    """A receipt signed by a retired key with ts past retired_at plus the grace fails
    with one line; --key-grace widens the grace."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(keys_doc(signer.entry(retired=True))))
    token = signer.token(payload(signer, ts=RETIRED_MS + 2 * HOUR_MS))
    done = cli(token, "--keys", keys)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"signature: FAILED (key {signer.kid} was retired at 2026-11-20T00:00:00.000+00:00:"
        " receipt ts 2026-11-20T02:00:00.000+00:00 is more than 3600 s after that)",
        f"FAILED: signature: key {signer.kid} was retired at 2026-11-20T00:00:00.000+00:00:"
        " receipt ts 2026-11-20T02:00:00.000+00:00 is more than 3600 s after that",
    ]
    done = cli(token, "--keys", keys, "--key-grace", "7200")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_retired_key_in_a_ledger_fails_that_receipt(signer: Signer, tmp_path: Path) -> None:
    """The window applies to every receipt of a ledger; the failing one is named."""
    successor = Signer()
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(keys_doc(signer.entry(retired=True), successor.entry())))
    payloads = chain_payloads(signer, 3)
    payloads[2]["ts"] = RETIRED_MS + 2 * HOUR_MS
    ledger = write_ledger(tmp_path, export([signer.token(p) for p in payloads]))
    done = cli("--keys", keys, "--ledger", ledger)
    assert done.returncode == 1
    assert f"FAILED: ledger: receipt seq 3: key {signer.kid} was retired at " in done.stdout


# --- hostile input --------------------------------------------------------------------


def hostile_cases(signer: Signer) -> dict[str, dict[str, Any]]:
    """Name → the arguments (and files, and stdin) of a run that must exit 2, one line."""
    token = signer.token(payload(signer))
    entry = signer.entry()
    ledger_tokens = [signer.token(p) for p in chain_payloads(signer, 2)]
    page = export(ledger_tokens)
    cases: dict[str, dict[str, Any]] = {
        f"token: {name}": {"token": bad} for name, (bad, _) in MALFORMED.items()
    }
    cases |= {
        "token: not utf-8 on stdin": {"token": "-", "stdin": b"\xff\xfe\xfd.\x80"},
        "token: empty stdin": {"token": "-", "stdin": b""},
        "token: not utf-8 argument": {"token": b"\xff\xfe.\xfd"},
        "token: huge": {"token": "-", "stdin": b"e" * 2_000_000 + b".x"},
    }
    keys_files: dict[str, bytes | Any] = {
        "not utf-8": b"\xff\xfe\x00{",
        "deeply nested": b"[" * 200_000 + b"]" * 200_000,
        "deeply nested keys": b'{"keys": ' + b"[" * 200_000,
        "huge number": b'{"keys": [], "x": ' + b"1" * 10_000 + b"}",
        "NaN": b"NaN",
        "a list": [entry],
        "keys not a list": {"keys": {"0": entry}},
        "a string entry": {"keys": ["rk_0", entry]},
        "a null entry": {"keys": [None, entry]},
        "a list entry": {"keys": [[entry]]},
        "a numeric kid": {"keys": [{**entry, "kid": 7}]},
        "public key not base64": {"keys": [{**entry, "public_key": "!!!"}]},
        "public key padded": {"keys": [{**entry, "public_key": entry["public_key"] + "="}]},
        "public key a number": {"keys": [{**entry, "public_key": 10**100}]},
        "public key too short": {"keys": [{**entry, "public_key": b64(bytes(31))}]},
        "alg unknown": {"keys": [{**entry, "alg": "none"}]},
        "created_at nonsense": {"keys": [{**entry, "created_at": "\ud800"}]},
        "created_at naive": {"keys": [{**entry, "created_at": "2026-11-01T00:00:00"}]},
        "created_at a number": {"keys": [{**entry, "created_at": 1.5e300}]},
        "retired_at a list": {"keys": [{**entry, "retired_at": []}]},
    }
    for name, doc in keys_files.items():
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        cases[f"keys: {name}"] = {"token": token, "keys": data}
    ledgers: dict[str, bytes | Any] = {
        "not utf-8": b"\xff\xfe\x00\x01",
        "broken json": b'{"receipts": [',
        "deeply nested": b"[" * 200_000 + b"]" * 200_000,
        "nested lists": [[ledger_tokens]],
        "huge number": b'{"receipts": [], "last_seq": ' + b"9" * 10_000 + b"}",
        "receipts not a list": {**page, "receipts": {"0": ledger_tokens[0]}},
        "a numeric entry": {**page, "receipts": [1, 2]},
        "a numeric token": {**page, "receipts": [{"token": 5}]},
        "a null in the list": [page, None],
        "last_seq a string": {**page, "last_seq": "2"},
        "last_seq a float": {**page, "last_seq": 2.0},
        "last_seq true": {**page, "last_seq": True},
        "last_seq zero": {**page, "last_seq": 0},
        "first_seq negative": {**page, "first_seq": -1},
        "chain a number": {**page, "chain": 5},
        "a malformed token": {**page, "receipts": [{"token": MALFORMED["huge number"][0]}]},
        "a token line that is not one": b"NaN\n",
    }
    for name, doc in ledgers.items():
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        cases[f"ledger: {name}"] = {"ledger": data}
    cases |= {
        "ledger: a key entry it names is unusable": {
            "ledger": json.dumps(page).encode(),
            "keys": json.dumps({"keys": [{**entry, "created_at": "soon"}]}).encode(),
        },
        "flag: --key-grace negative": {"token": token, "args": ["--key-grace", "-1"]},
        "flag: --key-grace a float": {"token": token, "args": ["--key-grace", "1e3"]},
        "flag: --key-grace huge": {"token": token, "args": ["--key-grace", "9" * 5000]},
        "flag: --key-grace not ascii": {"token": token, "args": ["--key-grace", "\u0663"]},
        "flag: --first-seq zero": {
            "ledger": json.dumps(page).encode(),
            "args": ["--first-seq", "0"],
        },
        "flag: --first-seq without --ledger": {"token": token, "args": ["--first-seq", "2"]},
        "keys: URL that is not one": {"token": token, "keys_arg": "http://[::1"},
        "keys: URL with a space": {"token": token, "keys_arg": "http://127.0.0.1:1/a b"},
        "keys: a directory": {"token": token, "keys_arg": "/"},
        "request: a directory": {"token": token, "args": ["--request", "/"]},
    }
    return cases


HOSTILE = sorted(hostile_cases(Signer()))
#: one or two of each kind, also run with --json (each run is a process: keep it short)
HOSTILE_JSON = [
    "token: lone surrogate",
    "token: not utf-8 on stdin",
    "keys: deeply nested",
    "keys: a string entry",
    "keys: public key not base64",
    "ledger: huge number",
    "ledger: last_seq a float",
    "flag: --key-grace negative",
    "keys: URL that is not one",
    "request: a directory",
]


@pytest.fixture(scope="module")
def hostile() -> dict[str, dict[str, Any]]:
    return hostile_cases(Signer())


def run_hostile(
    case: dict[str, Any], tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    """`python -m recovea_proxy verify-receipt` on one hostile case, bytes in and out."""
    keys = tmp_path / "keys.json"
    keys.write_bytes(case.get("keys", json.dumps(keys_doc(Signer().entry())).encode()))
    args: list[str | bytes] = [sys.executable, "-m", "recovea_proxy", "verify-receipt"]
    stdin = case.get("stdin", b"")
    if len(case.get("token", "")) > 100_000:  # beyond what argv holds
        args.append("-")
        stdin = case["token"].encode()
    elif "token" in case:
        args.append(case["token"])
    args += ["--keys", case.get("keys_arg", str(keys))]
    if "ledger" in case:
        (tmp_path / "ledger.json").write_bytes(case["ledger"])
        args += ["--ledger", str(tmp_path / "ledger.json")]
    return subprocess.run(
        [*args, *case.get("args", []), *extra],
        capture_output=True,
        input=stdin,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_exits_2_with_one_line(
    name: str, hostile: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Malformed input of any kind: exit 2, nothing on stdout and exactly one line on
    stderr, never a traceback."""
    done = run_hostile(hostile[name], tmp_path)
    stderr = done.stderr.decode(errors="replace")
    assert (done.returncode, done.stdout) == (2, b""), stderr
    assert stderr.startswith("recovea verify-receipt: ") and stderr.count("\n") == 1, stderr
    assert stderr.endswith("\n") and len(stderr) < 2000, stderr


@pytest.mark.parametrize("name", HOSTILE_JSON)
def test_hostile_input_with_json_prints_one_object(
    name: str, hostile: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The same with --json: exit 2, one JSON object on stdout naming the error, and
    nothing on stderr."""
    done = run_hostile(hostile[name], tmp_path, "--json")
    assert (done.returncode, done.stderr) == (2, b""), done.stderr.decode(errors="replace")
    assert done.stdout.count(b"\n") == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["checks"] == {}
    assert isinstance(report["error"], str) and report["error"]


def test_hostile_response_bodies_are_not_checkable_not_a_crash(
    signer: Signer, files: dict[str, Path], tmp_path: Path
) -> None:
    """A response file Python cannot read as JSON (too deep, numbers too long, not
    UTF-8) still has its hash checked; its token counts are not checkable."""
    bodies = [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"usage": {"prompt_tokens": ' + b"9" * 10_000 + b"}}",
        b"data: " + b"{" * 200_000 + b"\n\n",
        b"\xff\xfe\x00",
    ]
    for body in bodies:
        response = tmp_path / "response.bin"
        response.write_bytes(body)
        token = signer.token(payload(signer, response_sha256=sha(body)))
        done = cli(token, "--keys", files["keys.json"], "--response", response)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "tokens: not checkable (the response carries no usage)" in done.stdout


def test_token_from_a_closed_stdin_is_bad_input(files: dict[str, Path]) -> None:
    """`-` with stdin closed (not merely empty): exit 2 and one line, not a traceback."""
    script = 'exec "$0" -m recovea_proxy verify-receipt - --keys "$1" <&-'
    done = subprocess.run(
        ["sh", "-c", script, sys.executable, str(files["keys.json"])],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == "recovea verify-receipt: TOKEN is '-' but there is no stdin\n"
