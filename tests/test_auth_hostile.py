"""Key resolution under hostile input: made-up keys cannot grow the gateway's memory
or take its pool, a slow key store gives 503 within the auth timeout, a revocation
that crosses a lookup still counts, and no rcv_ key is ever forwarded upstream.

A key lookup (`recovea.resolve_rcv_key`) reads `recovea.teams`, so a test that holds
an ACCESS EXCLUSIVE lock on that table blocks every lookup deterministically, and
sees each blocked one in `pg_stat_activity`: that is how these tests tell a lookup
from an answer out of the gateway's memory.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import pytest

from tests.support import Gateway, MockServer, cli_json, set_provider_key, wait_until
from tests.test_auth import PROVIDER_SECRET, new_workspace, post

ANTHROPIC_SECRET = "sk-ant-api03-HostileWorkspaceKey-QRST"
CALLER_OPENAI_KEY = "sk-proj-CallerOwnOpenAIKey-7hY2"


def made_up_key(n: int) -> str:
    """A well-formed rcv_live_ key that no workspace holds (the n-th of a series)."""
    return f"rcv_live_{n:043d}"


class OwnerSession:
    """One owner connection to the test database, driven from the test's thread."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection = self._run(asyncpg.connect(url))
        self._locked = False

    def _run(self, work: object) -> object:
        return self._loop.run_until_complete(work)  # type: ignore[arg-type]

    def lock_teams(self) -> None:
        """Hold ACCESS EXCLUSIVE on recovea.teams: every key lookup waits behind it."""
        self._run(self._conn.execute("BEGIN; LOCK TABLE recovea.teams IN ACCESS EXCLUSIVE MODE"))
        self._locked = True

    def release(self) -> None:
        if self._locked:
            self._run(self._conn.execute("ROLLBACK"))
            self._locked = False

    def blocked_lookups(self) -> int:
        """Key lookups waiting on a lock right now."""
        # Activity is read once per transaction unless told otherwise, and the lock
        # holder's transaction is this one.
        self._run(self._conn.execute("SELECT pg_stat_clear_snapshot()"))
        count = self._run(
            self._conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%resolve_rcv_key%' AND pid <> pg_backend_pid()"
            )
        )
        assert isinstance(count, int)
        return count

    def close(self) -> None:
        self.release()
        self._run(self._conn.close())
        self._loop.close()


@pytest.fixture
def owner(db_env: dict[str, str]) -> Iterator[OwnerSession]:
    session = OwnerSession(db_env["RECOVEA_DATABASE_URL"])
    yield session
    session.close()


class InFlight:
    """A request sent from its own thread, so the test can act while it waits."""

    def __init__(self, send: Callable[[], httpx.Response]) -> None:
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, args=(send,), daemon=True)
        self._thread.start()

    def _run(self, send: Callable[[], httpx.Response]) -> None:
        self._response = send()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def response(self, timeout_s: float = 30) -> httpx.Response:
        self._thread.join(timeout_s)
        assert self._response is not None, "the request did not finish"
        return self._response


def refused(gateway: Gateway, key: str) -> bool:
    response = post(gateway, key)
    assert response.status_code == 401, response.text
    return response.json()["error"]["code"] == "invalid_api_key"


def rss_bytes(gateway: Gateway) -> int:
    """The gateway process's resident memory."""
    with open(f"/proc/{gateway.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def refuse_all(gateway: Gateway, keys: list[str]) -> None:
    """Send each key once (a few at a time); every one must be refused with 401."""

    def send(chunk: list[str]) -> list[int]:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            return [
                client.post(
                    "/v1/chat/completions", content=b"{}", headers={"x-api-key": key}
                ).status_code
                for key in chunk
            ]

    chunks = [keys[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        statuses = [status for part in pool.map(send, chunks) for status in part]
    assert statuses == [401] * len(keys)


def test_a_refusal_is_remembered_until_the_negative_cache_is_full(
    start_gateway: Callable[..., Gateway], owner: OwnerSession
) -> None:
    """A refused key is answered from memory while fewer than
    RECOVEA_KEY_NEGATIVE_CACHE_MAX other keys have been refused since it was last
    used; after that many it has been pushed out and is looked up again."""
    gw = start_gateway(
        RECOVEA_KEY_NEGATIVE_CACHE_MAX="50",
        RECOVEA_KEY_NEGATIVE_TTL_S="600",
        RECOVEA_AUTH_TIMEOUT_S="60",
    )
    first = made_up_key(0)
    assert refused(gw, first)
    refuse_all(gw, [made_up_key(n) for n in range(1, 50)])

    owner.lock_teams()
    try:
        # 49 others since: still remembered, answered with no lookup at all.
        assert refused(gw, first)
    finally:
        owner.release()

    refuse_all(gw, [made_up_key(n) for n in range(50, 100)])
    owner.lock_teams()
    try:
        again = InFlight(lambda: post(gw, first))
        wait_until(lambda: owner.blocked_lookups() == 1, 10, "the key looked up again")
        assert not again.done()
    finally:
        owner.release()
    assert again.response().status_code == 401


def test_made_up_keys_do_not_grow_the_gateway(start_gateway: Callable[..., Gateway]) -> None:
    """Thousands of distinct made-up keys each get 401, and the gateway's memory stays
    where it was once its negative cache is full."""
    gw = start_gateway(RECOVEA_KEY_NEGATIVE_CACHE_MAX="50", RECOVEA_KEY_NEGATIVE_TTL_S="600")
    refuse_all(gw, [made_up_key(n) for n in range(2000)])  # caches, pools and arenas warm
    before = rss_bytes(gw)
    refuse_all(gw, [made_up_key(n) for n in range(2000, 12_000)])
    grown = rss_bytes(gw) - before
    # Remembering every key would cost ~250 bytes each: 2.5 MB for these 10,000.
    # Without that, the resident size wanders by up to ~0.7 MB either way.
    assert grown < 1280 * 1024, f"grew {grown} bytes"


def test_a_blocked_key_store_is_a_503_within_the_auth_timeout(
    start_gateway: Callable[..., Gateway], owner: OwnerSession
) -> None:
    """A lookup that cannot finish within RECOVEA_AUTH_TIMEOUT_S answers 503
    auth_unavailable at the timeout, not whenever the key store gives up."""
    gw = start_gateway(RECOVEA_AUTH_TIMEOUT_S="0.5")
    owner.lock_teams()
    try:
        started = time.monotonic()
        response = post(gw, made_up_key(1))
        waited = time.monotonic() - started
    finally:
        owner.release()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"
    assert waited < 3, f"answered after {waited:.1f} s"
    # The pool came through it: the same key is looked up and refused.
    assert refused(gw, made_up_key(1))


def test_a_flood_of_lookups_leaves_the_pool_to_the_ledger(
    start_gateway: Callable[..., Gateway], owner: OwnerSession, db_env: dict[str, str]
) -> None:
    """Lookups of made-up keys take at most half of the gateway's pool, however many
    arrive at once: the ledger API keeps answering while they all wait."""
    gw = start_gateway(RECOVEA_AUTH_TIMEOUT_S="60")
    workspace = new_workspace(db_env, "hostile-flood")
    key = cli_json("key", "create", "--workspace", workspace, env=db_env)["key"]

    def ledger() -> httpx.Response:
        return httpx.get(
            f"{gw.url}/v1/recovea/ledger", headers={"authorization": f"Bearer {key}"}, timeout=30
        )

    assert ledger().status_code == 200  # the key is now in the gateway's memory
    owner.lock_teams()
    try:
        flood = [InFlight(lambda n=n: post(gw, made_up_key(100 + n))) for n in range(16)]
        wait_until(lambda: owner.blocked_lookups() >= 5, 10, "lookups to block")
        answer = InFlight(ledger)
        wait_until(answer.done, 3, "the ledger API while lookups wait")
        assert answer.response().status_code == 200
        assert owner.blocked_lookups() == 5
    finally:
        owner.release()
    assert [f.response().status_code for f in flood] == [401] * 16


def test_a_revocation_that_crosses_a_lookup_still_refuses_the_key(
    gateway: Gateway, owner: OwnerSession, db_env: dict[str, str]
) -> None:
    """A key revoked while the gateway's lookup of it is running is refused: the
    request in flight and the next one both get 401 (the lookup's answer, taken
    before the revocation, is neither served nor cached)."""
    workspace = new_workspace(db_env, "hostile-revoke-race")
    key = cli_json("key", "create", "--workspace", workspace, env=db_env)
    owner.lock_teams()
    try:
        in_flight = InFlight(lambda: post(gateway, key["key"]))
        # The lookup has taken its snapshot and waits for the lock.
        wait_until(lambda: owner.blocked_lookups() == 1, 10, "the lookup to block")
        cli_json("key", "revoke", key["key_id"], env=db_env)
        wait_until(
            lambda: any(
                line.get("event") == "key_revocation_received"
                and line.get("key_id") == key["key_id"]
                for line in gateway.log_lines()
            ),
            10,
            "the gateway to hear of the revocation",
        )
        assert not in_flight.done()
    finally:
        owner.release()
    assert in_flight.response().status_code == 401
    assert post(gateway, key["key"]).status_code == 401


@pytest.fixture(scope="module")
def rcv_key(db_env: dict[str, str]) -> str:
    """A valid key of a workspace that has OpenAI and Anthropic keys stored."""
    workspace = new_workspace(db_env, "hostile-mixed")
    set_provider_key(db_env, workspace, "anthropic", ANTHROPIC_SECRET)
    created: str = cli_json("key", "create", "--workspace", workspace, env=db_env)["key"]
    return created


def upstream_headers(mock: MockServer) -> list[dict[str, str]]:
    return [request["headers"] for request in mock.requests()]


@pytest.mark.parametrize(
    ("path", "header", "other"),
    [
        ("/v1/chat/completions", "x-api-key", ("authorization", f"Bearer {CALLER_OPENAI_KEY}")),
        ("/v1/chat/completions", "authorization", ("x-api-key", "sk-ant-api03-CallerOwn-ABCD")),
        ("/v1/messages", "x-api-key", ("authorization", f"Bearer {CALLER_OPENAI_KEY}")),
        ("/v1/messages", "authorization", ("x-api-key", "sk-ant-api03-CallerOwn-ABCD")),
    ],
)
def test_an_rcv_key_beside_a_provider_key_wins_and_stays_home(
    gateway: Gateway,
    mock: MockServer,
    rcv_key: str,
    path: str,
    header: str,
    other: tuple[str, str],
) -> None:
    """In passthrough mode, a request carrying an rcv_ key in either header and a
    provider key in the other is authenticated with the rcv_ key: the provider sees
    the workspace's own key, and neither of the caller's credentials."""
    headers = {other[0]: other[1], header: rcv_key}
    if header == "authorization":
        headers[header] = f"Bearer {rcv_key}"
    body = b'{"model":"gpt-4o","messages":[]}'
    if path == "/v1/messages":
        headers["anthropic-version"] = "2023-06-01"
        body = b'{"model":"claude-sonnet-5-5","max_tokens":8,"messages":[]}'
    mock.clear()
    response = httpx.post(f"{gateway.url}{path}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert gateway.record(response.headers["x-request-id"])["rcv_key_id"] is not None
    (seen,) = upstream_headers(mock)
    sent = str(seen).lower()
    assert "rcv_" not in sent
    assert other[1].split()[-1].lower() not in sent
    expected = ANTHROPIC_SECRET if path == "/v1/messages" else PROVIDER_SECRET
    assert expected in str(seen)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-api-key", "RCV_live_" + "A" * 43),
        ("x-api-key", "Rcv_Test_" + "B" * 43),
        ("x-api-key", "rcv_live_tooshort"),
        ("x-api-key", "rcv_live_" + "C" * 44),
        ("x-api-key", "rcv_prod_" + "D" * 43),
        ("authorization", "Bearer RCV_LIVE_" + "E" * 43),
        ("authorization", "Token rcv_live_" + "F" * 43),
        ("authorization", "Bearer rcv_live_" + "G" * 20 + " " + "H" * 22),
    ],
)
def test_anything_rcv_shaped_is_refused_never_passed_through(
    gateway: Gateway, mock: MockServer, header: str, value: str
) -> None:
    """Beside a provider key, a credential that begins with rcv_ in any case but is
    not a well-formed key is refused with 401, and nothing reaches the provider."""
    other = ("authorization", f"Bearer {CALLER_OPENAI_KEY}")
    if header == "authorization":
        other = ("x-api-key", "sk-ant-api03-CallerOwn-ABCD")
    mock.clear()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"model":"gpt-4o","messages":[]}',
        headers={header: value, other[0]: other[1]},
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert upstream_headers(mock) == []


def test_two_different_rcv_keys_are_refused(
    gateway: Gateway, mock: MockServer, rcv_key: str
) -> None:
    """A request carrying two different rcv_ keys (one per header) is refused: which
    workspace pays is never a guess."""
    mock.clear()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"model":"gpt-4o","messages":[]}',
        headers={"authorization": f"Bearer {rcv_key}", "x-api-key": made_up_key(7)},
    )
    assert response.status_code == 401
    assert upstream_headers(mock) == []
