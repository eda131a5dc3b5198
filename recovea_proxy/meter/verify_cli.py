"""The `recovea verify-receipt` command: check a receipt, and a chain, from public data only.

It reads the inputs (token, keys file or URL, request, response, ledger), runs the checks
of `recovea_proxy.meter.verify` and prints one line per check, or one JSON object. Exit
codes: 0 every check passed, 1 a check failed, 2 the input could not be read or parsed.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recovea_proxy.meter.verify import (
    KeySet,
    MalformedError,
    Receipt,
    VerifyError,
    check_chain,
    check_request,
    check_response,
    check_signature,
    check_usage,
    decode_token,
    load_keys,
    receipt_from_response,
)

KEYS_PATH = "/.well-known/recovea-receipt-keys"
FETCH_TIMEOUT = 10.0
NO_RECEIPT = (
    "no receipt to check: give TOKEN, '-' to read it from stdin, or a --response file"
    " that ends with a receipt line (or only --ledger to check a chain)"
)


class BadInput(Exception):
    """An input could not be read or parsed (exit 2)."""


@dataclass
class Inputs:
    """Everything the checks need, read and parsed."""

    keys: KeySet
    receipt: Receipt | None = None
    request: bytes | None = None
    response: bytes | None = None
    ledger: list[Receipt] | None = None


@dataclass
class Report:
    """The checks' outcomes, printed as lines or as one JSON object."""

    as_json: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def record(self, name: str, check: Callable[[], str]) -> None:
        """Run one check and print its line."""
        try:
            result, ok = check(), True
        except VerifyError as exc:
            result, ok = f"FAILED ({exc})", False
            self.error = self.error or f"{name}: {exc}"
        self.checks[name] = {"ok": ok, "result": result}
        if not self.as_json:
            print(f"{name}: {result}")

    def finish(self, subject: str) -> int:
        """Print the verdict; 0 when every check passed, else 1."""
        if self.as_json:
            print(
                json.dumps({"ok": self.error is None, "checks": self.checks, "error": self.error})
            )
        else:
            print(f"{subject} OK" if self.error is None else f"FAILED: {self.error}")
        return 0 if self.error is None else 1

    def bad_input(self, message: str) -> int:
        """Report input that could not be used; exit code 2."""
        if self.as_json:
            print(json.dumps({"ok": False, "checks": {}, "error": message}))
        else:
            print(f"recovea verify-receipt: {message}", file=sys.stderr)
        return 2


def keys_url(url: str) -> str:
    """The keys document's URL; a gateway root gets the well-known path appended."""
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + KEYS_PATH
    return url


def read_keys(source: str) -> KeySet:
    """The keys document from a file or an http(s) URL."""
    if not source.startswith(("http://", "https://")):
        return load_keys(read_file(source, "--keys"))
    url = keys_url(source)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
            body: bytes = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BadInput(f"cannot fetch keys from {url}: {exc}") from None
    return load_keys(body)


def read_file(path: str, flag: str) -> bytes:
    """A file's bytes; an unreadable file is bad input."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {flag} file {path}: {exc.strerror or exc}") from None


def ledger_tokens(doc: Any) -> list[str]:
    """Tokens from a `recovea-chain-v1` export, its entries, or a list of either."""
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, list):
        return [token for item in doc for token in ledger_tokens(item)]
    if isinstance(doc, dict) and isinstance(doc.get("receipts"), list):
        return ledger_tokens(doc["receipts"])
    if isinstance(doc, dict) and isinstance(doc.get("token"), str):
        return [doc["token"]]
    raise BadInput("--ledger is not a recovea-chain-v1 export, a JSON list, or token lines")


def read_ledger(path: str) -> list[Receipt]:
    """Receipts from a ledger export, a JSON list of exports or tokens, or token lines."""
    data = read_file(path, "--ledger")
    try:
        doc: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = data.decode(errors="replace").split()
    return [decode_token(token) for token in ledger_tokens(doc)]


def read_inputs(args: argparse.Namespace) -> Inputs:
    """Read and parse every input the arguments name."""
    inputs = Inputs(keys=read_keys(args.keys))
    if args.request:
        inputs.request = read_file(args.request, "--request")
    if args.response:
        inputs.response = read_file(args.response, "--response")
    if args.ledger:
        inputs.ledger = read_ledger(args.ledger)
    token = args.token
    if token == "-":
        token = sys.stdin.read()
    elif token is None and inputs.response is not None:
        token = receipt_from_response(inputs.response)
    if token is not None:
        inputs.receipt = decode_token(token)
    elif inputs.ledger is None or inputs.request is not None or inputs.response is not None:
        raise BadInput(NO_RECEIPT)
    return inputs


def check_receipt(inputs: Inputs, receipt: Receipt, report: Report) -> None:
    """The single receipt's checks: signature, request and response hashes, token counts."""
    report.record("signature", lambda: f"ok (kid {check_signature(receipt, inputs.keys)})")
    if inputs.request is not None:
        request = inputs.request
        report.record("request_sha256", _ok(lambda: check_request(receipt, request)))
    if inputs.response is not None:
        response = inputs.response
        report.record("response_sha256", _ok(lambda: check_response(receipt, response)))
        report.record("tokens", lambda: _tokens_result(check_usage(receipt, response)))


def _ok(check: Callable[[], object]) -> Callable[[], str]:
    def run_check() -> str:
        check()
        return "ok"

    return run_check


def _tokens_result(outcome: str) -> str:
    return (
        "not checkable (the response carries no usage)" if outcome == "not checkable" else outcome
    )


def _ledger_result(receipts: list[Receipt], keys: KeySet) -> str:
    check_chain(receipts, keys)
    first, last = receipts[0].payload, receipts[-1].payload
    seqs = f"seq {first['seq']}..{last['seq']}"
    return f"ok (chain {first['chain']}, {seqs}, {len(receipts)} receipts)"


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
        ledger = inputs.ledger
        report.record("ledger", lambda: _ledger_result(ledger, inputs.keys))
    return report.finish("receipt" if inputs.receipt is not None else "ledger")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument("token", nargs="?", metavar="TOKEN|-", help="receipt token, - for stdin")
    parser.add_argument("--keys", required=True, metavar="FILE|URL", help="public keys document")
    parser.add_argument("--request", metavar="FILE", help="the request body the client sent")
    parser.add_argument("--response", metavar="FILE", help="the response body it received")
    parser.add_argument("--ledger", metavar="FILE", help="a ledger export to check as a chain")
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
