"""`recovea verify-receipt --ledger` through the CLI: a chain's start and end checked against
the export, the client's newest receipt looked up in it, and keys used only in their
validity window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.receipt_support import (
    CHAT_STREAM,
    HOUR_MS,
    RETIRED_MS,
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


