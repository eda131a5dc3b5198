"""The receipt verifier's ledger fetch: `recovea verify-receipt --ledger URL` reads a
chain from the gateway's ledger API with the workspace's rcv_ key (`RECOVEA_API_KEY`,
never a flag: a flag shows in the process list).

With a receipt, it fetches the receipt's chain from the receipt's seq up to the
checkpoint covering it (`GET /v1/recovea/checkpoints?chain=&seq=`, then
`GET /v1/recovea/ledger?chain=&after_seq=` pages); without one, every page of the
chain the URL names (`?chain=ID`). The pages come back as a JSON list of
`recovea-chain-v1` exports, the covering checkpoint added to the last page's
`checkpoints`: exactly what `--ledger FILE` reads. Standard library only.

The gateway is not trusted here either: a fetch is bounded in pages, in bytes and in
time as a whole, not only page by page, so a gateway that keeps answering `has_more`
(or drips its bytes) ends the command with an error instead of holding it forever.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

API_KEY_ENV = "RECOVEA_API_KEY"
LEDGER_PATH = "/v1/recovea/ledger"
CHECKPOINTS_PATH = "/v1/recovea/checkpoints"
PAGE = 10_000
TIMEOUT_S = 30.0
#: a page of 10,000 receipts is about 15 MB
MAX_BYTES = 64 * 1024 * 1024
#: a whole fetch: 10 million receipts, about 15 GB of JSON, is past any real chain
#: between a receipt and its checkpoint; the byte and time bounds come first
MAX_PAGES = 1_000
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_SECONDS = 600.0
READ_CHUNK = 1024 * 1024


class _Budget:
    """What is left of one fetch's bytes and time."""

    __slots__ = ("bytes_left", "deadline")

    def __init__(self) -> None:
        self.bytes_left = MAX_TOTAL_BYTES
        self.deadline = time.monotonic() + MAX_SECONDS


class FetchError(Exception):
    """The ledger could not be fetched; the message says why, on one line."""


def is_url(value: str) -> bool:
    """Whether `--ledger` names a gateway rather than a file."""
    return value.startswith(("http://", "https://"))


def _read(response: Any, url: str, budget: _Budget) -> bytes:
    """The body, read in chunks so the page and fetch bounds hold while it arrives."""
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(READ_CHUNK):
        size += len(chunk)
        budget.bytes_left -= len(chunk)
        if size > MAX_BYTES:
            raise FetchError(f"{url} sent more than {MAX_BYTES} bytes")
        if budget.bytes_left < 0:
            raise FetchError(f"the ledger sent more than {MAX_TOTAL_BYTES} bytes in all")
        if time.monotonic() > budget.deadline:
            raise FetchError(f"the ledger fetch took longer than {MAX_SECONDS:.0f} s")
        chunks.append(chunk)
    return b"".join(chunks)


def _get(url: str, key: str, budget: _Budget) -> Any:
    """GET a JSON document with the rcv_ key; None on 404."""
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"}
    )
    timeout = min(TIMEOUT_S, budget.deadline - time.monotonic())
    if timeout <= 0:
        raise FetchError(f"the ledger fetch took longer than {MAX_SECONDS:.0f} s")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = _read(response, url, budget)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise FetchError(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"cannot fetch {url}: {exc}") from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError(f"{url} did not send JSON") from None


def fetch_chain(
    url: str, chain: str | None, seq: int | None, *, covering: bool
) -> list[dict[str, Any]]:
    """The chain's pages: from `seq` to the checkpoint covering it (`covering`), or to
    `seq` alone; with no `seq`, the whole chain. The URL is the gateway's root or its
    ledger URL; `chain` defaults to the URL's `?chain=`."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise FetchError(f"set {API_KEY_ENV} to an rcv_ key of the workspace")
    parts = urlsplit(url)
    root = f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix(LEDGER_PATH).rstrip('/')}"
    chain = chain or next(iter(parse_qs(parts.query).get("chain", [])), None)
    if not chain:
        raise FetchError("give a receipt, or a ledger URL that names ?chain=ID")
    budget = _Budget()
    until = seq
    checkpoint = None
    if seq is not None and covering:
        query = urlencode({"chain": chain, "seq": seq})
        checkpoint = _get(f"{root}{CHECKPOINTS_PATH}?{query}", key, budget)
        if isinstance(checkpoint, dict) and type(checkpoint.get("seq")) is int:
            until = checkpoint["seq"]
    pages: list[dict[str, Any]] = []
    after = (seq or 1) - 1
    while True:
        limit = PAGE if until is None else max(1, min(PAGE, until - after))
        query = urlencode({"chain": chain, "after_seq": after, "limit": limit})
        page = _get(f"{root}{LEDGER_PATH}?{query}", key, budget)
        if not isinstance(page, dict) or not isinstance(page.get("receipts"), list):
            raise FetchError(f"{root}{LEDGER_PATH} did not send a recovea-chain-v1 page")
        pages.append(page)
        following = page.get("next_after_seq")
        if not page.get("has_more") or type(following) is not int or following <= after:
            break
        if not page["receipts"]:
            raise FetchError(f"{root}{LEDGER_PATH} sent an empty page that says it has more")
        if len(pages) >= MAX_PAGES:
            raise FetchError(f"the ledger sent more than {MAX_PAGES} pages")
        if until is not None and following >= until:
            break
        after = following
    if checkpoint is not None:
        pages[-1].setdefault("checkpoints", []).append(checkpoint)
    return pages
