"""A cache entry's wire form (what Redis holds) is read back only as an entry a gateway
could have stored: anything else is refused like garbage, so the lookup is a counted
miss and never a broken answer to the client."""

from __future__ import annotations

import time
from typing import Any

import pytest

from recovea_proxy.levers.cache_store import CacheEntry

ENTRY = CacheEntry.of(
    200,
    ((b"content-type", b"application/json"),),
    (b'{"choices":[]}',),
    time.time(),
)


def _with(**changes: Any) -> CacheEntry:
    """`ENTRY` with some fields changed, as a value in Redis could hold it."""
    fields: dict[str, Any] = {
        "status": ENTRY.status,
        "headers": ENTRY.headers,
        "stored_at": ENTRY.stored_at,
    }
    fields.update(changes)
    return CacheEntry.of(fields["status"], fields["headers"], ENTRY.chunks, fields["stored_at"])


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (_with(status=500), "a status never kept"),
        (_with(status=0), "a status never kept"),
        (_with(stored_at=float("nan")), "no real time"),
        (_with(stored_at=float("inf")), "no real time"),
        (_with(headers=((b"x-a", b"one\r\nset-cookie: s=1"),)), "cannot be written"),
        (_with(headers=((b"x-a", b"nul\x00"),)), "cannot be written"),
        (_with(headers=((b"bad name", b"v"),)), "cannot be written"),
        (_with(headers=((b"", b"v"),)), "cannot be written"),
        (_with(headers=((b"Content-Encoding", b"gzip"),)), "an encoded body"),
    ],
)
def test_an_entry_no_gateway_could_have_stored_does_not_parse(
    entry: CacheEntry, reason: str
) -> None:
    """Well-formed bytes whose entry could not be replayed as it is (another status
    than 200, no real time to reckon an age from, a header the response writer refuses,
    an encoded body the replay would call identity) are refused like garbage: the
    lookup is then a counted miss, not a broken answer to the client."""
    with pytest.raises(ValueError, match=reason):
        CacheEntry.from_bytes(entry.to_bytes())


def test_an_entry_a_gateway_stores_parses_back() -> None:
    """The rules above refuse nothing a gateway keeps: a provider's usual headers, an
    explicit identity encoding, a tab inside a value."""
    entry = _with(
        headers=(
            (b"Content-Type", b"application/json"),
            (b"content-encoding", b"identity"),
            (b"x-request-id", b"req_1\tsecond"),
        )
    )
    assert CacheEntry.from_bytes(entry.to_bytes()) == entry
