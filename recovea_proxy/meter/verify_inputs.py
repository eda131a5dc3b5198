"""What `recovea verify-receipt` reads, read and parsed: the token, the keys (a file or
a URL), the request and response bodies, and the ledger (a file, or a gateway URL
through `verify_fetch`). Anything that cannot be read or parsed is `BadInput` (exit 2
in `verify_cli`), never a failed check. Standard library and `cryptography` only,
like the rest of the verifier.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recovea_proxy.meter.verify import (
    KEY_GRACE_S,
    KeySet,
    Receipt,
    decode_token,
    load_json,
    load_keys,
    receipt_from_response,
    shown,
)
from recovea_proxy.meter.verify_checkpoint import Checkpoint, decode_checkpoint
from recovea_proxy.meter.verify_fetch import FetchError, fetch_chain, is_url

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
