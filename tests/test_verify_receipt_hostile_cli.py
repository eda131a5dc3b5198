"""`recovea verify-receipt` against malformed input of every kind: exit 2 with one line
(or one JSON object), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.receipt_support import (
    MALFORMED,
    REPO,
    Signer,
    b64,
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
