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
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    shown,
)
from recovea_proxy.meter.verify_chain import check_chain, check_end, check_member, check_start
from recovea_proxy.meter.verify_checkpoint import check_coverage, check_covered
from recovea_proxy.meter.verify_fetch import API_KEY_ENV
from recovea_proxy.meter.verify_inputs import BadInput, Inputs, Ledger, read_inputs


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
