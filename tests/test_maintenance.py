"""Background maintenance cannot die: a round that fails in any way — even with an
exception outside the database driver's usual trees — is logged, counted and retried
sooner, and the schedule goes on: later rounds roll up again once the database
answers, and every round still picks up a rotated receipt signing key.

The fault is real: a TCP proxy in front of the embedded Postgres that, while in
"garbage" mode, answers a client's startup packet with bytes that are not the
Postgres protocol (a truncated authentication request), so asyncpg raises
`InternalClientError`; in "pass" mode it relays to the server's socket.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from recovea_proxy.auth.keyring import Keyring, load_keyring
from recovea_proxy.config import Settings
from recovea_proxy.meter.maintenance import Maintenance, retry_delay
from recovea_proxy.meter.receipt_keys import active_signing_key, rotate_signing_key
from recovea_proxy.meter.receipts import ReceiptSigner
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.store.database import app_url, connect, open_pool
from recovea_proxy.store.migrate import apply_migrations
from tests.support import Postgres

#: an AuthenticationRequest ('R') too short to hold its status: not Postgres's protocol
GARBAGE = b"R\x00\x00\x00\x04"


class FlakyPostgres:
    """A TCP proxy to a Postgres unix socket whose `mode` the test flips."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.mode = "garbage"
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen; the URL a client uses to reach Postgres through the proxy."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            if self.mode == "garbage":
                await reader.read(65536)  # the client's startup packet
                writer.write(GARBAGE)
                await writer.drain()
                await reader.read()  # until the client gives up on us
            else:
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(
                    str(self.socket_path)
                )
                await asyncio.gather(
                    _pipe(reader, upstream_writer), _pipe(upstream_reader, writer)
                )
        except OSError:
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


async def eventually(check: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """Poll `check` (plain or async) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Rig:
    """A real `Maintenance` whose owner connections go through the proxy; its pool
    (receipt keys) reaches the database directly."""

    proxy: FlakyPostgres
    maintenance: Maintenance
    metrics: GatewayMetrics
    signer: ReceiptSigner
    keyring: Keyring
    owner: asyncpg.Connection

    def runs(self, job: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "recovea_maintenance_runs_total", {"job": job, "outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def rig(own_postgres: Postgres) -> AsyncIterator[Rig]:
    settings = Settings.from_env(
        {
            "RECOVEA_DATABASE_URL": own_postgres.url,
            "RECOVEA_DATA_DIR": str(own_postgres.data_dir),
            "RECOVEA_MASTER_KEY_FILE": str(own_postgres.data_dir / "master.key"),
        }
    )
    owner = await connect(own_postgres.url)
    await apply_migrations(owner)
    keyring = await asyncio.to_thread(load_keyring, settings)
    pool = await open_pool(app_url(settings), size=2)
    async with pool.acquire() as conn:
        signer = ReceiptSigner(await active_signing_key(conn, keyring))
    socket_dir = parse_qs(urlsplit(own_postgres.url).query)["host"][0]
    proxy = FlakyPostgres(Path(socket_dir) / ".s.PGSQL.5432")
    metrics = GatewayMetrics()
    maintenance = Maintenance(
        await proxy.start(),
        metrics,
        interval_s=0.05,
        timeout_s=5,
        max_tags=1000,
        signer=signer,
        pool=pool,
        keyring=keyring,
    )
    try:
        yield Rig(proxy, maintenance, metrics, signer, keyring, owner)
    finally:
        await maintenance.close()
        await proxy.close()
        await pool.close()
        await owner.close()


async def pending_event(owner: asyncpg.Connection) -> uuid.UUID:
    """A workspace with one event in the current hour, marked for the rollup as the
    drainer marks it; its id."""
    workspace = uuid.uuid4()
    now = datetime.now(UTC)
    await owner.execute(
        "INSERT INTO recovea.request_events (request_id, trace_id, customer_id, baseline_model,"
        " realized_model, input_tokens, output_tokens, status, latency_total_ms,"
        " gateway_overhead_ms, provider, env, ts)"
        " VALUES ($1, 't', $2, 'gpt-4o', 'gpt-4o', 10, 5, 'success', 1, 1, 'openai', 'live', $3)",
        uuid.uuid4(),
        workspace,
        now,
    )
    await owner.execute(
        "INSERT INTO recovea.rollup_pending (hour, customer_id) VALUES ($1, $2)",
        now.replace(minute=0, second=0, microsecond=0),
        workspace,
    )
    return workspace


async def test_rounds_that_raise_outside_the_driver_errors_do_not_stop_the_schedule(
    rig: Rig,
) -> None:
    """While the database answers garbage, every round fails with asyncpg's
    InternalClientError, and each is logged with that type and counted; once it
    answers again, a later round succeeds and the pending hour is rolled up."""
    with capture_logs() as logs:
        rig.maintenance.start()
        await eventually(lambda: rig.runs("maintenance", "error") >= 3, 20, "failed rounds")
        failures = [line for line in logs if line["event"] == "maintenance_failed"]
        assert {"InternalClientError"} == {line["error"] for line in failures}
        assert 0 == rig.runs("maintenance", "ok")

        workspace = await pending_event(rig.owner)
        rig.proxy.mode = "pass"
        await eventually(lambda: rig.runs("maintenance", "ok") >= 1, 20, "a round that works")
        rolled_up = await eventually(
            lambda: rig.owner.fetchval(
                "SELECT sum(requests) FROM recovea.usage_rollups WHERE customer_id = $1",
                workspace,
            ),
            20,
            "the pending hour rolled up",
        )
    assert 1 == rolled_up


async def test_a_failing_round_does_not_stop_the_next_rounds_receipt_key_refresh(
    rig: Rig,
) -> None:
    """A receipt key rotated while maintenance keeps failing is still picked up by a
    later round."""
    rig.maintenance.start()
    await eventually(lambda: rig.proxy.connections >= 1, 20, "a round reaching the database")
    new_kid = await rotate_signing_key(rig.owner, rig.keyring)
    assert new_kid != rig.signer.kid
    await eventually(lambda: rig.signer.kid == new_kid, 20, "the rotated key in use")
    assert "garbage" == rig.proxy.mode
    failed_so_far = rig.runs("maintenance", "error")
    await eventually(
        lambda: rig.runs("maintenance", "error") > failed_so_far, 20, "rounds still running"
    )


def test_after_failures_the_next_round_comes_sooner_backing_off_to_the_interval() -> None:
    """The wait is the interval after a good round; after failures in a row it starts
    short and doubles, never beyond the interval."""
    interval = 300.0
    waits = [retry_delay(interval, failures) for failures in range(12)]
    assert [300.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0] == waits
    assert 0.05 == retry_delay(0.05, 3)
    assert interval == retry_delay(interval, 10_000)
