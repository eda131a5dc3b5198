"""The `recovea verify-receipt` command: check a receipt, and a chain, from public data only.

It reads the inputs (token, keys file or URL, request, response, ledger), runs the checks
of `recovea_proxy.meter.verify` and `verify_chain`, and prints one line per check, or
one JSON object. Exit codes: 0 every check passed, 1 a check failed, 2 the input could
not be read or parsed (then one line on stderr, or the JSON object; never a traceback),
3 nothing failed but something is not yet verified: an unsigned receipt whose
checkpoint was not given, or is not signed yet.

`--ledger` is a file, or a gateway URL read with the rcv_ key in `RECOVEA_API_KEY`
(`verify_fetch`): with a receipt, its chain from the receipt to its covering
checkpoint; without, the chain the URL names (`?chain=ID`), whole.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recovea_proxy.meter.verify import (
    KEY_GRACE_S,
    KeySet,
    MalformedError,
    Pending,
    Receipt,
    VerifyError,
    check_request,
    check_response,
    check_signature,
    check_usage,
    decode_token,
    load_json,
    load_keys,
    receipt_from_response,
    shown,
)
from recovea_proxy.meter.verify_chain import check_chain, check_end, check_member, check_start
from recovea_proxy.meter.verify_checkpoint import (
    Checkpoint,
    check_coverage,
    check_covered,
    decode_checkpoint,
)
from recovea_proxy.meter.verify_fetch import API_KEY_ENV, FetchError, fetch_chain, is_url

KEYS_PATH = "/.well-known/recovea-receipt-keys"
FETCH_TIMEOUT = 10.0
#: a keys document is a few hundred bytes a key; a server sending more is not one
KEYS_MAX_BYTES = 4 * 1024 * 1024
NO_RECEIPT = (
    "no receipt to check: give TOKEN, '-' to read it from stdin, or a --response file"
    " that ends with a receipt line (or only --ledger to check a chain)"
)
NOT_A_LEDGER = "--ledger is not a recovea-chain-v1 export, a JSON list of them, or token lines"


class BadInput(Exception):
    """An input could not be read or parsed (exit 2)."""


@dataclass
class Ledger:
    """The receipts of a ledger file, and what its export pages state about the chain:
    the chain ids they name, the first page's first_seq and the last page's last_seq."""

    receipts: list[Receipt]
    chains: set[str] = field(default_factory=set)
    first_seq: int | None = None
    last_seq: int | None = None
    #: the signed checkpoints the export lists beside its receipts
    checkpoints: list[Checkpoint] = field(default_factory=list)


@dataclass
class Inputs:
    """Everything the checks need, read and parsed."""

    keys: KeySet
    receipt: Receipt | None = None
    request: bytes | None = None
    response: bytes | None = None
    ledger: Ledger | None = None
    first_seq: int = 1


def one_line(text: str) -> str:
    """Text fit for one output line (file names and error texts come from outside)."""
    return shown(text, limit=1000)


@dataclass
class Report:
    """The checks' outcomes, printed as lines or as one JSON object."""

    as_json: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    #: the first check that is not yet verifiable (nothing failed)
    pending: str | None = None

    def record(self, name: str, check: Callable[[], str]) -> None:
        """Run one check and print its line."""
        entry: dict[str, Any]
        try:
            result = check()
            entry = {"ok": True, "result": result}
        except VerifyError as exc:
            result = f"FAILED ({exc})"
            entry = {"ok": False, "result": result}
            self.error = self.error or f"{name}: {exc}"
        except Pending as exc:
            result = f"NOT YET VERIFIED ({exc})"
            entry = {"ok": False, "pending": True, "result": result}
            self.pending = self.pending or f"{name}: {exc}"
        self.checks[name] = entry
        if not self.as_json:
            print(one_line(f"{name}: {result}"))

    def finish(self, subject: str) -> int:
        """Print the verdict; 0 when every check passed, 1 when one failed, 3 when none
        failed but one is not yet verifiable."""
        ok = self.error is None and self.pending is None
        if self.as_json:
            verdict = {"ok": ok, "checks": self.checks, "error": self.error}
            if self.error is None and self.pending is not None:
                verdict["pending"] = self.pending
            print(json.dumps(verdict))
        elif self.error is not None:
            print(one_line(f"FAILED: {self.error}"))
        elif self.pending is not None:
            print(one_line(f"{subject} NOT YET VERIFIED: {self.pending}"))
        else:
            print(one_line(f"{subject} OK"))
        return 0 if ok else 1 if self.error is not None else 3

    def bad_input(self, message: str) -> int:
        """Report input that could not be used; exit code 2."""
        if self.as_json:
            print(json.dumps({"ok": False, "checks": {}, "error": message}))
        else:
            print(one_line(f"recovea verify-receipt: {message}"), file=sys.stderr)
        return 2


def keys_url(url: str) -> str:
    """The keys document's URL; a gateway root gets the well-known path appended."""
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + KEYS_PATH
    return url


def fetch_keys(url: str) -> bytes:
    """The keys document at a URL: bounded in size and, roughly, in time."""
    deadline = time.monotonic() + FETCH_TIMEOUT
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    body = bytearray()
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
        while chunk := response.read(65536):
            body += chunk
            if len(body) > KEYS_MAX_BYTES:
                raise BadInput(f"the keys document at {url} is larger than {KEYS_MAX_BYTES} bytes")
            if time.monotonic() > deadline:
                raise BadInput(f"the keys document at {url} took over {FETCH_TIMEOUT:g} s")
    return bytes(body)


def read_keys(source: str, grace_s: int) -> KeySet:
    """The keys document from a file or an http(s) URL."""
    if not source.startswith(("http://", "https://")):
        return load_keys(read_file(source, "--keys"), grace_s)
    url = source
    try:
        url = keys_url(source)
        body = fetch_keys(url)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise BadInput(f"cannot fetch keys from {url}: {exc}") from None
    return load_keys(body, grace_s)


def read_file(path: str, flag: str) -> bytes:
    """A file's bytes; an unreadable file is bad input."""
    try:
        return Path(path).read_bytes()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BadInput(f"cannot read {flag} file {path}: {why}") from None


def read_stdin() -> str:
    """The token on stdin (bytes that are not UTF-8 make a token that is not one)."""
    if sys.stdin is None:
        raise BadInput("TOKEN is '-' but there is no stdin")
    try:
        return sys.stdin.buffer.read().decode(errors="replace")
    except OSError as exc:
        raise BadInput(f"cannot read stdin: {exc}") from None


def _token(item: Any) -> str:
    """A token, or a ledger entry's token."""
    if isinstance(item, dict):
        item = item.get("token")
    if not isinstance(item, str):
        raise BadInput(NOT_A_LEDGER)
    return item


def _stated_seq(page: dict[str, Any], name: str) -> int | None:
    value = page.get(name)
    if value is not None and (type(value) is not int or value < 1):
        raise BadInput(f"--ledger: {name} is not a positive integer")
    return value


def ledger_of(doc: Any) -> Ledger:
    """A ledger from a `recovea-chain-v1` export, a JSON list of exports (pages), of
    entries, or of tokens."""
    pages: list[dict[str, Any]] = []
    tokens: list[str] = []
    for item in doc if isinstance(doc, list) else [doc]:
        if isinstance(item, dict) and "receipts" in item:
            if not isinstance(item["receipts"], list):
                raise BadInput(NOT_A_LEDGER)
            pages.append(item)
            tokens += [_token(entry) for entry in item["receipts"]]
        else:
            tokens.append(_token(item))
    ledger = Ledger([decode_token(token) for token in tokens])
    ledger.checkpoints = _checkpoints(pages)
    if pages:
        ledger.first_seq = _stated_seq(pages[0], "first_seq")
        ledger.last_seq = _stated_seq(pages[-1], "last_seq")
    for page in pages:
        chain = page.get("chain")
        if chain is None:
            continue
        if not isinstance(chain, str):
            raise BadInput("--ledger: chain is not a string")
        ledger.chains.add(chain)
    return ledger


def _checkpoints(pages: list[dict[str, Any]]) -> list[Checkpoint]:
    """The checkpoints the pages list (each once)."""
    found: dict[bytes, Checkpoint] = {}
    for page in pages:
        listed = page.get("checkpoints", [])
        if not isinstance(listed, list):
            raise BadInput("--ledger: checkpoints is not a list")
        for entry in listed:
            checkpoint = decode_checkpoint(_token(entry))
            found.setdefault(checkpoint.canonical, checkpoint)
    return list(found.values())


def read_ledger(path: str) -> Ledger:
    """A ledger export, a JSON list of exports or tokens, or token lines."""
    data = read_file(path, "--ledger")
    if data.lstrip()[:1] in (b"[", b"{"):
        return ledger_of(load_json(data, "--ledger"))
    return Ledger([decode_token(token) for token in data.decode(errors="replace").split()])


def _whole_number(raw: str | None, flag: str, least: int, default: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < least:
        raise BadInput(f"{flag} must be a whole number, at least {least}")
    return int(raw)


def read_inputs(args: argparse.Namespace) -> Inputs:
    """Read and parse every input the arguments name."""
    grace = _whole_number(args.key_grace, "--key-grace", 0, KEY_GRACE_S)
    first_seq = _whole_number(args.first_seq, "--first-seq", 1, 1)
    if args.first_seq is not None and not args.ledger:
        raise BadInput("--first-seq applies to a --ledger")
    inputs = Inputs(keys=read_keys(args.keys, grace), first_seq=first_seq)
    if args.request:
        inputs.request = read_file(args.request, "--request")
    if args.response:
        inputs.response = read_file(args.response, "--response")
    if args.ledger and not is_url(args.ledger):
        inputs.ledger = read_ledger(args.ledger)
    token = args.token
    if token == "-":
        token = read_stdin()
    elif token is None and inputs.response is not None:
        token = receipt_from_response(inputs.response)
    if token is not None:
        inputs.receipt = decode_token(token)
    elif not args.ledger or inputs.request is not None or inputs.response is not None:
        raise BadInput(NO_RECEIPT)
    if args.ledger and is_url(args.ledger):
        _fetch_ledger(inputs, args.ledger)
    _keys_readable(inputs)
    return inputs


def _fetch_ledger(inputs: Inputs, url: str) -> None:
    """The ledger from the gateway: the receipt's chain from its seq to the checkpoint
    covering it (then the chain's head is not checked: it is accepted where it starts),
    or, without a receipt, the whole chain the URL names."""
    receipt = inputs.receipt
    chain = seq = None
    if receipt is not None:
        chain, seq = receipt.payload["chain"], receipt.payload["seq"]
    try:
        pages = fetch_chain(url, chain, seq, covering=receipt is not None and not receipt.signed)
    except FetchError as exc:
        raise BadInput(f"--ledger: {exc}") from None
    inputs.ledger = ledger_of(pages)
    if seq is not None:
        inputs.first_seq = seq
        inputs.ledger.first_seq = inputs.ledger.last_seq = None


def _keys_readable(inputs: Inputs) -> None:
    """A receipt to check must not name a key whose entry cannot be read: that is bad
    input, not a failed check (other unreadable entries do not matter)."""
    receipts = [inputs.receipt] if inputs.receipt is not None else []
    receipts += inputs.ledger.receipts if inputs.ledger is not None else []
    unusable = inputs.keys.unusable
    if named := sorted({receipt.payload["kid"] for receipt in receipts} & unusable.keys()):
        raise BadInput(f"--keys: key {shown(named[0])} is unusable: {unusable[named[0]]}")


def check_receipt(inputs: Inputs, receipt: Receipt, report: Report) -> None:
    """The single receipt's checks: signature (or, for an unsigned receipt, the
    checkpoint covering it), request and response hashes, token counts."""
    ledger = inputs.ledger
    if not receipt.signed and ledger is not None and ledger.receipts:
        report.record(
            "checkpoint",
            lambda: _covered(receipt, ledger, inputs.keys),
        )
    else:
        report.record("signature", lambda: _signature(receipt, inputs.keys))
    if inputs.request is not None:
        request = inputs.request
        report.record("request_sha256", _ok(lambda: check_request(receipt, request)))
    if inputs.response is not None:
        response = inputs.response
        report.record("response_sha256", _ok(lambda: check_response(receipt, response)))
        report.record("tokens", lambda: _tokens_result(check_usage(receipt, response)))


def check_ledger(inputs: Inputs, ledger: Ledger, report: Report) -> None:
    """The chain's checks: its links, its start, its end, and the receipt in it."""
    receipts = ledger.receipts
    report.record("ledger", lambda: _ledger_result(ledger, inputs.keys))
    if not receipts:
        return
    report.record("chain_start", lambda: check_start(receipts, inputs.first_seq))
    report.record("chain_end", lambda: _end_result(ledger, inputs.receipt is not None))
    if ledger.checkpoints or not all(receipt.signed for receipt in receipts):
        report.record("checkpoints", lambda: _coverage(ledger, inputs.keys))
    if inputs.receipt is not None:
        receipt = inputs.receipt
        report.record("in_chain", lambda: check_member(receipt, receipts))


def _signature(receipt: Receipt, keys: KeySet) -> str:
    try:
        return f"ok (kid {check_signature(receipt, keys)})"
    except Pending as exc:
        raise Pending(f"{exc}; give --ledger to check it") from None


def _covered(receipt: Receipt, ledger: Ledger, keys: KeySet) -> str:
    check_chain(ledger.receipts, keys)  # the links from the receipt to its checkpoint
    return check_covered(receipt, ledger.receipts, ledger.checkpoints, keys)


def _coverage(ledger: Ledger, keys: KeySet) -> str:
    check_chain(ledger.receipts, keys)
    return check_coverage(ledger.receipts, ledger.checkpoints, keys)


def _ok(check: Callable[[], object]) -> Callable[[], str]:
    def run_check() -> str:
        check()
        return "ok"

    return run_check


def _tokens_result(outcome: str) -> str:
    return (
        "not checkable (the response carries no usage)" if outcome == "not checkable" else outcome
    )


def _ledger_result(ledger: Ledger, keys: KeySet) -> str:
    receipts = ledger.receipts
    check_chain(receipts, keys)
    first, last = receipts[0].payload, receipts[-1].payload
    if others := sorted(ledger.chains - {first["chain"]}):
        raise VerifyError(
            f"the export names chain {shown(others[0])}; its receipts are from chain"
            f" {shown(first['chain'])}"
        )
    seqs = f"seq {first['seq']}..{last['seq']}"
    return f"ok (chain {first['chain']}, {seqs}, {len(receipts)} receipts)"


def _end_result(ledger: Ledger, have_receipt: bool) -> str:
    if ledger.last_seq is None and not have_receipt:
        return "not checkable (the export states no last_seq; give your newest receipt too)"
    return check_end(ledger.receipts, ledger.last_seq)


def run(args: argparse.Namespace) -> int:
    """Run `recovea verify-receipt`; returns the exit code."""
    report = Report(as_json=args.json)
    try:
        inputs = read_inputs(args)
    except (BadInput, MalformedError) as exc:
        return report.bad_input(str(exc))
    if inputs.receipt is not None:
        check_receipt(inputs, inputs.receipt, report)
    if inputs.ledger is not None:
        check_ledger(inputs, inputs.ledger, report)
    return report.finish("receipt" if inputs.receipt is not None else "ledger")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments (numbers are checked by `read_inputs`, as input)."""
    parser.add_argument("token", nargs="?", metavar="TOKEN|-", help="receipt token, - for stdin")
    parser.add_argument("--keys", required=True, metavar="FILE|URL", help="public keys document")
    parser.add_argument("--request", metavar="FILE", help="the request body the client sent")
    parser.add_argument("--response", metavar="FILE", help="the response body it received")
    parser.add_argument(
        "--ledger",
        metavar="FILE|URL",
        help=f"a ledger export to check as a chain, or the gateway's URL (rcv_ key in"
        f" ${API_KEY_ENV}): a receipt's chain up to its checkpoint, or ?chain=ID whole",
    )
    parser.add_argument(
        "--first-seq",
        metavar="N",
        help="accept a ledger that starts at seq N (its head pruned); default 1",
    )
    parser.add_argument(
        "--key-grace",
        metavar="SECONDS",
        help=f"how far outside a key's published window a receipt's ts may lie;"
        f" default {KEY_GRACE_S}",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


DESCRIPTION = "Check a Recovea receipt (and a receipt chain) using only public data."


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `verify-receipt` on the `recovea` command's subparsers."""
    parser = commands.add_parser("verify-receipt", help="check a receipt", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on its own, as `python -m recovea_proxy.meter.verify_cli`."""
    parser = argparse.ArgumentParser(prog="recovea verify-receipt", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
