"""The receipt verifier's ledger fetch: `recovea verify-receipt --ledger URL` reads a
chain from the gateway's ledger API with the workspace's rcv_ key (`RECOVEA_API_KEY`,
never a flag: a flag shows in the process list).

With a receipt, it fetches the receipt's chain from the receipt's seq up to the
checkpoint covering it (`GET /v1/recovea/checkpoints?chain=&seq=`, then
`GET /v1/recovea/ledger?chain=&after_seq=` pages); without one, every page of the
chain the URL names (`?chain=ID`). The pages come back as a JSON list of
`recovea-chain-v1` exports, the covering checkpoint added to the last page's
`checkpoints`: exactly what `--ledger FILE` reads. Standard library only.
"""

from __future__ import annotations

import json
import os
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


class FetchError(Exception):
    """The ledger could not be fetched; the message says why, on one line."""


def is_url(value: str) -> bool:
    """Whether `--ledger` names a gateway rather than a file."""
    return value.startswith(("http://", "https://"))


def _get(url: str, key: str) -> Any:
    """GET a JSON document with the rcv_ key; None on 404."""
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise FetchError(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"cannot fetch {url}: {exc}") from None
    if len(body) > MAX_BYTES:
        raise FetchError(f"{url} sent more than {MAX_BYTES} bytes")
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
    until = seq
    checkpoint = None
    if seq is not None and covering:
        query = urlencode({"chain": chain, "seq": seq})
        checkpoint = _get(f"{root}{CHECKPOINTS_PATH}?{query}", key)
        if isinstance(checkpoint, dict) and type(checkpoint.get("seq")) is int:
            until = checkpoint["seq"]
    pages: list[dict[str, Any]] = []
    after = (seq or 1) - 1
    while True:
        limit = PAGE if until is None else max(1, min(PAGE, until - after))
        query = urlencode({"chain": chain, "after_seq": after, "limit": limit})
        page = _get(f"{root}{LEDGER_PATH}?{query}", key)
        if not isinstance(page, dict) or not isinstance(page.get("receipts"), list):
            raise FetchError(f"{root}{LEDGER_PATH} did not send a recovea-chain-v1 page")
        pages.append(page)
        following = page.get("next_after_seq")
        if not page.get("has_more") or type(following) is not int or following <= after:
            break
        if until is not None and following >= until:
            break
        after = following
    if checkpoint is not None:
        pages[-1].setdefault("checkpoints", []).append(checkpoint)
    return pages
