"""Floods and absurd input, swept broadly: malformed bodies, absurd tags, bad keys by
the thousand, bodies over the size limit, header floods. After each attack the
invariants hold: no 500 of the gateway's own, no traceback, internal error or key in
its log, memory bounded, the victim's next request served and metered; whatever
reached the provider with a workspace has its row, and whatever was refused before
the body never reached the provider. (Odd framings, methods and request lines:
test_odd_requests.py.)"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from recovea_proxy.clean import MODEL_MAX, TAG_MAX, TRACE_ID_MAX
from tests.conftest import upstream_env
from tests.hostile.conftest import (
    assert_unharmed,
    from_provider,
    gateway_code,
    normal_request,
    rss_kib,
)
from tests.hostile.rawhttp import Connection, chat_head, exchange, framed, request_bytes
from tests.ledger_support import Tenant, owner_query, stored
from tests.support import Gateway, MockServer, Postgres

MAX_BODY_MB = 2
LIMIT = MAX_BODY_MB * 1024 * 1024
CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
ENDPOINTS = ("/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/responses")
SECRET = "sk-proj-FloodKeyPastedIntoATag0123456789QRST"
MADE_UP = "rcv_live_" + "A" * 43
KEY_SHAPE = re.compile(r"rcv_(?:live|test)_[A-Za-z0-9_-]{43}")

# (what it is, the body, the model its row holds)
MALFORMED: list[tuple[str, bytes, str | None]] = [
    ("invalid JSON", b'{"model": gpt-4o-mini}', None),
    ("truncated JSON", b'{"model":"gpt-4o-mini","messages":[{"role":', None),
    ("an array", b'[{"model":"gpt-4o-mini"}]', None),
    ("a string", b'"gpt-4o-mini"', None),
    ("a number", b"42", None),
    ("invalid UTF-8", b'{"model":"gpt-4o-mini\xff\xfe","messages":[]}', None),
    ("a UTF-8 BOM", b'\xef\xbb\xbf{"model":"gpt-4o-mini","messages":[]}', None),
    ("a lone surrogate", b'{"model":"\\ud800","messages":[]}', None),
    ("100k levels of [", b"[" * 100_000, None),
    ("100k levels in an object", b'{"model":"gpt-4o-mini","messages":' + b"[" * 100_000, None),
    ("duplicate keys", b'{"model":"a","model":"b","messages":[]}', "b"),
    ('"stream": "yes"', b'{"model":"gpt-4o-mini","stream":"yes","messages":[]}', "gpt-4o-mini"),
    (
        '"stream_options": 5',
        b'{"model":"gpt-4o-mini","stream":true,"stream_options":5,"messages":[]}',
        "gpt-4o-mini",
    ),
    *[
        (f"a model that is {kind}", b'{"model":' + value + b',"messages":[]}', None)
        for kind, value in (
            ("a number", b"7"),
            ("a list", b'["gpt-4o-mini"]'),
            ("an object", b'{"id":"gpt-4o-mini"}'),
            ("null", b"null"),
            ("true", b"true"),
        )
    ],
    ("a model of 1 MB", b'{"model":"' + b"m" * 1_000_000 + b'","messages":[]}', "m" * MODEL_MAX),
]


@pytest.fixture(scope="module")
def target(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    """This module's gateway (passthrough on): bodies over MAX_BODY_MB are refused."""
    gateway = Gateway(
        {**upstream_env(mock), **db_env, "RECOVEA_MAX_BODY_MB": str(MAX_BODY_MB)}, workdir
    )
    yield gateway
    gateway.stop()


def row_count(postgres: Postgres, where: str = "true") -> int:
    sql = f"SELECT count(*) AS n FROM recovea.request_events WHERE {where}"
    rows = owner_query(postgres.url, sql)
    count: int = rows[0]["n"]
    return count


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send from a helper thread; the server may stop reading or close (that is the point)."""
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_malformed_bodies_go_to_the_provider_as_they_are_and_are_metered(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """Invalid, truncated or non-object JSON, bad UTF-8, a BOM, a lone surrogate, 100k
    levels of nesting, duplicate keys, odd `stream` values, a model of every JSON type
    and a model of 1 MB, with a valid key, on chat, messages, embeddings and responses:
    none is the gateway's business. Each goes to the provider byte for byte in length,
    the provider's answer comes back (never a 500 of the gateway's), each gets its row,
    with the model read as the provider reads it (the last duplicate, cut to 256
    characters) or NULL, and memory stays where it was."""
    statuses: list[int] = []
    warm = 0
    for index, path in enumerate(ENDPOINTS):
        if index == 1:
            warm = rss_kib(target)
        for what, body, model in MALFORMED:
            mock.clear()
            response = httpx.post(
                f"{target.url}{path}",
                content=body,
                headers={**victim.bearer, "content-type": "application/json"},
                timeout=30,
            )
            statuses.append(response.status_code)
            assert from_provider(response.headers), (path, what, response.text[:200])
            [seen] = mock.requests()
            assert (seen["path"], seen["body_bytes"]) == (path, len(body)), (path, what)
            row = stored(target, victim, "requests", response.headers["x-request-id"])
            assert row["baseline_model"] == model, (path, what)
    assert 500 not in statuses
    grown = rss_kib(target) - warm
    assert grown < 32 * 1024, f"grew {grown} KiB"
    assert_unharmed(target, victim)


def test_a_body_that_is_not_json_reaches_the_provider_byte_for_byte(
    target: Gateway, victim: Tenant
) -> None:
    """Through the mock's echo route (which answers with the SHA-256 of what it got),
    on an OpenAI and an Anthropic surface: every malformed body arrives unchanged."""
    for path in ("/v1/_mock/echo", "/anthropic/v1/_mock/echo"):
        for what, body, _ in MALFORMED:
            response = httpx.post(
                f"{target.url}{path}", content=body, headers=victim.bearer, timeout=30
            )
            assert response.status_code == 200, (path, what)
            assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert_unharmed(target, victim)


def test_absurd_tags_are_cleaned_in_the_row(target: Gateway, victim: Tenant) -> None:
    """Feature and customer tags of 8 KB holding invalid UTF-8 and a pasted key, an 8 KB
    trace id holding a key: the request is served and its row holds each cleaned —
    printable, at most 128 (tags) or 64 (trace id) characters, the key masked as
    `****` and its last four — and the response names the same trace id. The same
    headers with a made-up key get 401."""
    tags = {
        "x-recovea-feature": "checkout\xff\xfe\x80 " + SECRET + " " + "f" * 8192,
        # é, then a surrogate encoded in UTF-8 (which UTF-8 forbids)
        "x-recovea-customer": "\xc3\xa9l\xed\xa0\x80ise " + SECRET + " " + "c" * 8192,
        "x-recovea-trace-id": SECRET + " " + "t" * 8192,
    }
    headers = {**victim.bearer, "content-type": "application/json", **tags}
    response = exchange(target.port, request_bytes("POST", "/v1/chat/completions", headers, CHAT))
    assert response.status == 200, response.body[:300]
    row = stored(target, victim, "requests", response.headers["x-request-id"])
    for column, limit, start in (
        ("feature", TAG_MAX, "checkout"),
        ("end_user_id", TAG_MAX, "é"),
        ("trace_id", TRACE_ID_MAX, "****"),
    ):
        value = row[column]
        assert isinstance(value, str) and value.startswith(start), (column, value)
        assert value.isprintable() and len(value) <= limit, (column, value)
        assert SECRET not in value and "****" + SECRET[-4:] in value, (column, value)
    assert response.headers["x-recovea-trace-id"] == row["trace_id"]
    assert SECRET not in target.log_text()

    refused = exchange(
        target.port,
        request_bytes(
            "POST", "/v1/chat/completions", {**headers, "authorization": f"Bearer {MADE_UP}"}, CHAT
        ),
    )
    assert refused.status == 401 and gateway_code(refused) == "invalid_api_key"
    assert_unharmed(target, victim)


def test_a_garbage_traceparent_gets_a_trace_id_of_its_own(
    target: Gateway, victim: Tenant
) -> None:
    """A `traceparent` that is not W3C's (invalid bytes, 4 KB) is ignored: the row gets
    a new trace id; a well-formed one gives its trace id (so the header is read)."""
    garbage = "00-" + "\xff" * 32 + "-" + "z" * 4096
    well_formed = "00-" + "4bf92f3577b34da6a3ce929d0e0e4736" + "-00f067aa0ba902b7-01"
    trace_ids = []
    for traceparent in (garbage, well_formed):
        headers = {**victim.bearer, "content-type": "application/json", "traceparent": traceparent}
        response = exchange(
            target.port, request_bytes("POST", "/v1/chat/completions", headers, CHAT)
        )
        assert response.status == 200
        row = stored(target, victim, "requests", response.headers["x-request-id"])
        trace_ids.append(row["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", trace_ids[0]), trace_ids[0]
    assert trace_ids[0] != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_ids[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert_unharmed(target, victim)


def test_a_trace_id_outside_latin_1_is_no_500(
    start_gateway: Callable[..., Gateway], victim: Tenant
) -> None:
    """X-Recovea-Trace-Id with invalid UTF-8 bytes, or with a character outside Latin-1
    (€, sent as UTF-8): served (200) with a valid key, refused (401) with a made-up
    one, never a 500. (A gateway of its own: the traceback this provokes must not
    fail the other tests' log checks.)"""
    gateway = start_gateway()
    statuses = []
    for trace in ("\xff\xfe", "\xe2\x82\xac-trace"):
        for key in (victim.key, MADE_UP):
            headers = {
                "authorization": f"Bearer {key}",
                "content-type": "application/json",
                "x-recovea-trace-id": trace,
            }
            response = exchange(
                gateway.port, request_bytes("POST", "/v1/chat/completions", headers, CHAT)
            )
            statuses.append(response.status)
    assert statuses == [200, 401, 200, 401]
    assert_unharmed(gateway, victim)


def made_up_keys(count: int) -> list[str]:
    """Well-formed rcv_live_ keys no workspace holds (fixed seed)."""
    rng = random.Random(20_240_611)
    return [
        "rcv_live_" + base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode()
        for _ in range(count)
    ]


def malformed_credentials(count: int) -> list[dict[str, str]]:
    """Credentials that are no key: wrong prefix case, too short, `Bearer` with nothing,
    a 10 KB key, rcv_ in the other header in mixed case."""
    shapes = [
        lambda n: {"authorization": f"Bearer RCV_LIVE_{n:043d}"},
        lambda n: {"authorization": f"Bearer rcv_live_{n:012d}"},
        lambda n: {"authorization": "Bearer"},
        lambda n: {"authorization": f"Bearer rcv_live_{n:010d}" + "B" * 10_240},
        lambda n: {"x-api-key": f"Rcv_test_{n:043d}"},
    ]
    return [shapes[n % len(shapes)](n) for n in range(count)]


def test_thousands_of_bad_keys_over_keep_alive_are_refused_and_leave_nothing(
    target: Gateway, victim: Tenant, postgres: Postgres
) -> None:
    """3,000 made-up well-formed keys and 1,000 malformed credentials, from four threads
    over four kept-alive connections, on chat and messages: each gets 401
    `invalid_api_key` (or 503 `auth_unavailable` under the auth timeout; never 200,
    never 500), none leaves a row, no key reaches the log, memory stays bounded."""
    credentials = [{"authorization": f"Bearer {k}"} for k in made_up_keys(3000)]
    credentials += malformed_credentials(1000)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    with httpx.Client(base_url=target.url, timeout=30, limits=limits) as client:

        def send(item: tuple[int, dict[str, str]]) -> tuple[int, str]:
            index, headers = item
            path = ENDPOINTS[index % 2]
            response = client.post(path, content=CHAT, headers=headers)
            body = response.json()
            return response.status_code, body["error"]["code"] if "error" in body else str(body)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, enumerate(credentials[:300])))  # pools and arenas warm
            normal_request(target, victim)
            before = row_count(postgres), row_count(postgres, "customer_id IS NULL")
            rss = rss_kib(target)
            outcomes = set(pool.map(send, enumerate(credentials)))
    assert outcomes <= {(401, "invalid_api_key"), (503, "auth_unavailable")}, outcomes
    grown = rss_kib(target) - rss
    assert grown < 16 * 1024, f"grew {grown} KiB"
    normal_request(target, victim)
    after = row_count(postgres), row_count(postgres, "customer_id IS NULL")
    assert after == (before[0] + 1, before[1])
    assert not set(KEY_SHAPE.findall(target.log_text())) & set(made_up_keys(3000))
    assert_unharmed(target, victim)


def test_a_body_announced_over_the_limit_is_refused_unread(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """A content-length over RECOVEA_MAX_BODY_MB (just over, and 2^64 - 1), with a valid
    key, with and without `Expect: 100-continue`: 413 `request_too_large` at once (no
    `100 Continue` first), and the provider sees nothing."""
    mock.clear()
    for length in (LIMIT + 1, 2**64 - 1):
        for expect in ((), ("expect: 100-continue",)):
            with Connection(target.port) as conn:
                head = chat_head(victim.key, *expect, f"content-length: {length}")
                conn.send(head + b'\r\n{"model":')
                response = conn.response()
            assert response.status == 413, (length, expect, response.status)
            assert gateway_code(response) == "request_too_large"
    assert mock.requests() == []
    assert_unharmed(target, victim)


def test_a_chunked_body_over_the_limit_is_refused_and_memory_stays_bounded(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """Ten chunked bodies of twice the limit, each sent whole while the answer is read:
    each gets 413 `request_too_large`, the provider sees none, and the gateway's memory
    does not keep what it refused."""
    piece = b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n"
    body = piece * (2 * LIMIT // 65536) + b"0\r\n\r\n"
    head = chat_head(victim.key, "transfer-encoding: chunked") + b"\r\n"

    def refuse_one() -> None:
        with Connection(target.port) as conn:
            conn.send(head)
            sender = threading.Thread(target=send_quietly, args=(conn.sock, body))
            sender.start()
            response = conn.response()
            sender.join(30)
        assert response.status == 413
        assert gateway_code(response) == "request_too_large"

    mock.clear()
    refuse_one()  # buffers and arenas warm
    before = rss_kib(target)
    for _ in range(10):
        refuse_one()
    grown = rss_kib(target) - before
    assert grown < 16 * 1024, f"grew {grown} KiB"
    assert mock.requests() == []
    assert_unharmed(target, victim)


def test_a_header_flood_gets_431(target: Gateway, victim: Tenant, mock: MockServer) -> None:
    """200 headers, or one header of 40 KB, with a valid key: 431 `headers_too_large`,
    nothing forwarded (the bounds in depth: tests/test_http_limits.py)."""
    mock.clear()
    floods = [
        tuple(f"x-flood-{n:03d}: v" for n in range(200)),
        ("x-flood: " + "v" * 40 * 1024,),
    ]
    for flood in floods:
        with Connection(target.port) as conn:
            conn.send(framed(chat_head(victim.key, *flood), CHAT))
            response = conn.response()
        assert response.status == 431
        assert gateway_code(response) == "headers_too_large"
    assert mock.requests() == []
    assert_unharmed(target, victim)
