"""Callers cannot exhaust the gateway: a refused caller costs no body read, the
receipt keys are served from memory, requests in flight are bounded (503 with
`retry-after`), and a body that stalls is cut off (408)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import upstream_env
from tests.hostile.conftest import assert_unharmed
from tests.hostile.rawhttp import exchange, request_bytes
from tests.ledger_support import Tenant, make_tenant
from tests.support import Gateway, MockServer, Postgres, wait_until

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_a_refused_caller_is_answered_before_its_body_is_read(
    target: Gateway, victim: Tenant
) -> None:
    """Headers announcing a 30 MB body with a made-up key: the 401 comes at once, while
    the body has not been sent (the gateway never waits for it)."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer rcv_live_" + b"A" * 43 + b"\r\n"
            b"content-length: 30000000\r\n\r\n{"
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 401 ")
    assert_unharmed(target, victim)


def test_the_receipt_keys_are_served_from_memory(
    mock: MockServer, workdir: Path, own_postgres: Postgres
) -> None:
    """`/.well-known/recovea-receipt-keys` answers from memory: the same document,
    however often it is fetched, with the database gone."""
    env = {
        **upstream_env(mock),
        "RECOVEA_DATABASE_URL": own_postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(workdir / "master.key"),
    }
    gateway = Gateway(env, workdir)
    try:
        url = f"{gateway.url}/.well-known/recovea-receipt-keys"
        first = httpx.get(url)
        assert first.status_code == 200 and first.json()["keys"]
        own_postgres.stop()
        for _ in range(50):
            again = httpx.get(url)
            assert again.status_code == 200
            assert again.content == first.content
    finally:
        gateway.stop()
        own_postgres.start()


def test_requests_in_flight_are_bounded_with_a_retry_after(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    """With RECOVEA_MAX_IN_FLIGHT=2 and two slow streams in flight, a third request
    gets 503 `gateway_overloaded` with `retry-after` (the SDKs back off on it); once
    the streams end, requests are served again."""
    tenant = make_tenant(db_env, "hostile-inflight")
    gateway = Gateway({**upstream_env(mock), **db_env, "RECOVEA_MAX_IN_FLIGHT": "2"}, workdir)
    release = threading.Event()
    started: list[int] = []

    def slow_stream() -> None:
        with httpx.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={**tenant.bearer, "x-mock-chunk-delay-ms": "200", "x-mock-chunks": "50"},
            timeout=60,
        ) as response:
            started.append(response.status_code)
            for _ in response.iter_bytes():
                if release.is_set():
                    break

    threads = [threading.Thread(target=slow_stream) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(started) == 2, 15, "two streams in flight")
        refused = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=CHAT, headers=tenant.bearer, timeout=30
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "gateway_overloaded"
        assert refused.headers["retry-after"] == "1"
        release.set()
        for thread in threads:
            thread.join(timeout=30)

        def served() -> bool:
            response = httpx.post(
                f"{gateway.url}/v1/chat/completions", json=CHAT, headers=tenant.bearer
            )
            return response.status_code == 200

        wait_until(served, 15, "a request served after the streams ended")
    finally:
        release.set()
        gateway.stop()


def test_a_body_that_stalls_gets_408(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    """A caller with a valid key that announces a body and stops — after part of it, or
    before its first byte — gets 408 `request_timeout` after RECOVEA_BODY_IDLE_TIMEOUT_S,
    and the provider sees nothing; a body that keeps coming, slowly, is served."""
    tenant = make_tenant(db_env, "hostile-slowbody")
    gateway = Gateway(
        {**upstream_env(mock), **db_env, "RECOVEA_BODY_IDLE_TIMEOUT_S": "0.5"}, workdir
    )
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {tenant.key}\r\ncontent-length: {{length}}\r\n\r\n"
    )
    try:
        mock.clear()
        for sent in (b'{"model":"gpt-4o-mini",', b""):
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
                sock.sendall(head.format(length=5000).encode() + sent)
                started = time.monotonic()
                reply = b""
                while b'"request_timeout"' not in reply:
                    chunk = sock.recv(65536)
                    assert chunk, f"closed without the whole answer: {reply!r}"
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
            assert time.monotonic() - started < 10
        assert mock.requests() == []

        body = orjson.dumps(CHAT)
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
            sock.sendall(head.format(length=len(body)).encode())
            paced_from = time.monotonic()
            for at in range(0, len(body), len(body) // 5 + 1):
                time.sleep(0.2)  # the behaviour under test: a slow client, never 0.5 s silent
                sock.sendall(body[at : at + len(body) // 5 + 1])
            assert time.monotonic() - paced_from > 0.5  # longer than the allowance in all
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    finally:
        gateway.stop()


def test_an_rcv_key_in_any_forwarded_header_never_reaches_the_provider(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """A value that starts with `rcv_`, in any case and any header the gateway would
    otherwise forward, is dropped before the request goes upstream."""
    mock.clear()
    response = exchange(
        target.port,
        request_bytes(
            "POST",
            "/v1/chat/completions",
            {
                **victim.bearer,
                "content-type": "application/json",
                "api-key": victim.key,
                "x-goog-api-key": "RCV_live_" + "B" * 43,
                "x-harmless": "kept",
            },
            b'{"model":"gpt-4o-mini","messages":[]}',
        ),
    )
    assert response.status == 200
    [seen] = mock.requests()
    assert seen["headers"]["x-harmless"] == "kept"
    assert not [v for v in seen["headers"].values() if v[:4].lower() == "rcv_"]


def test_the_wait_for_a_pooled_upstream_connection_is_bounded(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    """With one upstream connection, held by a slow stream, the next request waits at
    most RECOVEA_UPSTREAM_POOL_WAIT_S (plus the connect timeout) and gets 502
    `upstream_unreachable`, instead of queueing behind the stream."""
    tenant = make_tenant(db_env, "hostile-poolwait")
    gateway = Gateway(
        {
            **upstream_env(mock),
            **db_env,
            "RECOVEA_UPSTREAM_MAX_CONNECTIONS": "1",
            "RECOVEA_UPSTREAM_POOL_WAIT_S": "0.3",
            "RECOVEA_CONNECT_TIMEOUT_S": "1",
        },
        workdir,
    )
    release = threading.Event()
    started = threading.Event()

    def slow_stream() -> None:
        with httpx.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={**tenant.bearer, "x-mock-chunk-delay-ms": "200", "x-mock-chunks": "100"},
            timeout=60,
        ) as response:
            started.set()
            for _ in response.iter_bytes():
                if release.is_set():
                    break

    holder = threading.Thread(target=slow_stream)
    try:
        holder.start()
        assert started.wait(15)
        waited = time.monotonic()
        queued = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=CHAT, headers=tenant.bearer, timeout=30
        )
        assert queued.status_code == 502
        assert queued.json()["error"]["code"] == "upstream_unreachable"
        assert time.monotonic() - waited < 10  # the stream itself lasts 20 s
    finally:
        release.set()
        holder.join(timeout=30)
        gateway.stop()
