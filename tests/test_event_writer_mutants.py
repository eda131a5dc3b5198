"""The event writer on its own, in this process, against the session's real Postgres
reached through a unix-socket gate (tests/db_gate.py): its probe tells a database that
answers from one that does not, a timeout and a data error from an outage, every wait
is bounded when the database hangs, and a refused event costs it no connection.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from recovea_proxy.meter.writer import EventWriter, is_data_error, is_timeout
from tests.db_gate import gate_for
from tests.drain_support import app_url_of, good_event, prepare
from tests.support import Postgres


@pytest.fixture(scope="module")
def workspace(postgres: Postgres) -> str:
    return asyncio.run(prepare(postgres.url, ["writer-mutants"]))[0]


async def test_the_probe_tells_a_database_that_answers_from_one_that_does_not(
    postgres: Postgres, workspace: str
) -> None:
    """`answers` is True while the database answers, False when it is unreachable and
    False (within about a second) when it hangs."""
    async with gate_for(postgres) as gate:
        writer = EventWriter(gate.url(app_url_of(postgres.url)))
        assert await writer.answers() is True
        gate.stall()
        started = time.monotonic()
        assert await writer.answers() is False
        assert time.monotonic() - started < 5
        gate.resume()
        await gate.shut()
        assert await writer.answers() is False


async def test_the_writer_tells_a_timeout_and_a_data_error_from_an_outage(
    postgres: Postgres, workspace: str
) -> None:
    """A statement cancelled by its timeout and the client's own wait running out are
    timeouts; a value Postgres refuses is a data error; a refused grant is neither."""
    conn = await asyncpg.connect(app_url_of(postgres.url))
    try:
        errors: list[BaseException] = []
        for query in (
            "SET statement_timeout = 10; SELECT pg_sleep(1)",
            "SELECT 'not a number'::int",
            "INSERT INTO public.recovea_migrations (name) VALUES ('x')",
        ):
            try:
                await conn.execute(query)
            except asyncpg.PostgresError as exc:
                errors.append(exc)
        cancelled, data, denied = errors
    finally:
        await conn.close()
    assert isinstance(denied, asyncpg.InsufficientPrivilegeError)
    assert (is_timeout(cancelled), is_data_error(cancelled)) == (True, False)
    assert (is_timeout(data), is_data_error(data)) == (False, True)
    assert (is_timeout(denied), is_data_error(denied)) == (False, False)
    assert is_timeout(TimeoutError()) is True


async def test_a_write_to_a_database_that_hangs_fails_within_the_writers_timeout(
    postgres: Postgres, workspace: str
) -> None:
    """A write to a database that stops answering fails after the writer's timeout
    (connecting or writing), and once the database answers again the next write goes
    through on a fresh connection."""
    async with gate_for(postgres) as gate:
        writer = EventWriter(gate.url(app_url_of(postgres.url)), timeout_s=0.3)
        try:
            assert await writer.write([good_event(workspace)]) == 0
            gate.stall()
            for _ in range(2):  # a held connection, then a new one that hangs
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await writer.write([good_event(workspace)])
                assert time.monotonic() - started < 5
            gate.resume()
            assert await writer.write([good_event(workspace)]) == 0
        finally:
            await writer.close()


async def test_a_refused_event_does_not_cost_the_writer_its_connection(
    postgres: Postgres, workspace: str
) -> None:
    """A batch Postgres refuses for its content is rolled back on the same connection,
    which the next batch uses (no reconnect per refused event); after an outage the
    writer connects afresh."""
    async with gate_for(postgres) as gate:
        writer = EventWriter(gate.url(app_url_of(postgres.url)), timeout_s=0.3)
        try:
            assert await writer.write([good_event(workspace)]) == 0
            conn = writer._conn
            with pytest.raises(asyncpg.PostgresError) as refused:
                await writer.write([good_event(workspace, baseline_model="gpt\x00-4o")])
            assert is_data_error(refused.value)
            assert writer._conn is conn
            assert await writer.write([good_event(workspace)]) == 0
            assert writer._conn is conn
            gate.cut()
            with pytest.raises(Exception) as cut:
                await writer.write([good_event(workspace)])
            assert not is_data_error(cut.value)
            assert await writer.write([good_event(workspace)]) == 0
            assert writer._conn is not conn
        finally:
            await writer.close()


async def test_closing_the_writer_is_bounded_when_the_database_hangs(
    postgres: Postgres, workspace: str
) -> None:
    """The database stops answering after the last write: closing the writer gives up on
    a clean goodbye after 2 s and cuts the connection (shutdown is not held up)."""
    async with gate_for(postgres) as gate:
        writer = EventWriter(gate.url(app_url_of(postgres.url)))
        assert await writer.write([good_event(workspace)]) == 0
        gate.stall()
        started = time.monotonic()
        await asyncio.wait_for(writer.close(), 10)
        assert time.monotonic() - started < 2.7
        gate.resume()


async def test_the_probe_of_a_hung_database_gives_up_within_about_a_second(
    postgres: Postgres,
) -> None:
    """A database that accepts connections but never answers: `answers` is False after
    about a second (its connect timeout), so a slow write is told from an outage fast."""
    async with gate_for(postgres) as gate:
        writer = EventWriter(gate.url(app_url_of(postgres.url)))
        gate.stall()
        started = time.monotonic()
        assert await writer.answers() is False
        assert time.monotonic() - started < 1.7
        gate.resume()
