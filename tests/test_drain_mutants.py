"""The drainer's promises, in this process, against the session's real Postgres reached
through a unix-socket gate that the test can shut (the database unreachable, its
connections cut) and open again: events are written in batches of at most
RECOVEA_METER_BATCH_MAX, or after the flush interval; an outage is retried and
spooled, never rejected, and replayed when the database is back; a connection cut
between batches is an outage too; closing flushes what is queued (or spools it) and
the next process adopts and writes what was spooled; what is lost is counted (a full
dead-letter file, a full spool at exit) under `meter_events_total` and
`gateway_fail_open_total`; the queue and spool gauges read the live values.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from recovea_proxy.meter.dead_letter import DeadLetters
from recovea_proxy.meter.drain import Drainer
from recovea_proxy.meter.queue import Item, MeterQueue
from recovea_proxy.meter.spool import Spool
from recovea_proxy.meter.writer import EventWriter
from recovea_proxy.observability.metrics import GatewayMetrics
from tests.db_gate import gate_for
from tests.drain_support import COLUMN, app_url_of, good_event, prepare, stored_ids
from tests.support import Postgres


@pytest.fixture(scope="module")
def workspace(postgres: Postgres) -> str:
    return asyncio.run(prepare(postgres.url, ["drain-mutants"]))[0]


@pytest.fixture(scope="module")
def other_workspace(postgres: Postgres) -> str:
    return asyncio.run(prepare(postgres.url, ["drain-mutants-other"]))[0]


class WorkspaceLock:
    """A workspace's row held FOR UPDATE by another session (as a deletion in progress
    holds it): a write of that workspace's events waits until `release`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def hold(cls, postgres: Postgres, workspace: str) -> WorkspaceLock:
        conn = await asyncpg.connect(postgres.url)
        await conn.execute("BEGIN")
        await conn.execute(
            "SELECT 1 FROM recovea.workspaces WHERE customer_id = $1::uuid FOR UPDATE", workspace
        )
        return cls(conn)

    async def waited_on(self) -> bool:
        """Whether a write is waiting for this lock."""
        await self._conn.execute("SELECT pg_stat_clear_snapshot()")  # fresh, in a transaction
        waiting = await self._conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%FOR KEY SHARE%'"
        )
        return bool(waiting)

    async def release(self) -> None:
        if not self._conn.is_closed():
            await self._conn.execute("ROLLBACK")
            await self._conn.close()


@dataclass
class Drain:
    drainer: Drainer
    queue: MeterQueue
    spool: Spool
    metrics: GatewayMetrics
    dead_dir: Path

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("meter_events_total", {"outcome": outcome})
        return float(value or 0)

    def fail_open(self, reason: str) -> float:
        labels = {"layer": "meter", "reason": reason}
        value = self.metrics.registry.get_sample_value("gateway_fail_open_total", labels)
        return float(value or 0)

    def gauge(self, name: str) -> float:
        return float(self.metrics.registry.get_sample_value(name) or 0)

    def batches(self) -> tuple[float, float]:
        """(batches written, events in them), from the batch-size histogram."""
        registry = self.metrics.registry
        count = registry.get_sample_value("meter_batch_size_count") or 0
        total = registry.get_sample_value("meter_batch_size_sum") or 0
        return float(count), float(total)


def new_drain(
    url: str,
    data_dir: Path,
    *,
    batch_max: int = 5000,
    interval_s: float = 0.05,
    spool_bytes: int = 64 * 1024 * 1024,
    dead_bytes: int = 64 * 1024 * 1024,
    dead_dir: Path | None = None,
    queue_max: int = 100_000,
    write_timeout_s: float = 5.0,
) -> Drain:
    metrics = GatewayMetrics()
    queue = MeterQueue(queue_max, batch_max, lambda: None)
    spool = Spool(data_dir / "spool", spool_bytes)
    dead_dir = dead_dir or data_dir / "dead-letter"
    drainer = Drainer(
        queue,
        EventWriter(url, timeout_s=write_timeout_s),
        spool,
        DeadLetters(dead_dir, dead_bytes),
        metrics,
        batch_max=batch_max,
        interval_s=interval_s,
    )
    return Drain(drainer, queue, spool, metrics, dead_dir)


async def until(predicate: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    """Poll `predicate` without blocking the event loop; fail after the deadline."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def until_waited_on(lock: WorkspaceLock) -> None:
    end = time.monotonic() + 10
    while not await lock.waited_on():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for a write to wait on the lock")
        await asyncio.sleep(0.01)


def request_id(event: Item) -> str:
    return str(event[COLUMN["request_id"]])


async def test_a_full_queue_is_written_in_batches_of_batch_max(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """25 events waiting with a batch size of 10: three batches (10, 10, 5), every
    event written once and counted."""
    drain = new_drain(app_url_of(postgres.url), tmp_path, batch_max=10, interval_s=10.0)
    events = [good_event(workspace) for _ in range(25)]
    for event in events:
        drain.queue.put(event)
    started = time.perf_counter()
    await drain.drainer.start()
    try:
        await until(lambda: drain.count("written") == 25, "25 written")
        assert drain.batches() == (3.0, 25.0)
        assert drain.drainer.written == 25
        flush_seconds = drain.metrics.registry.get_sample_value("meter_flush_seconds_sum")
        assert 0 < float(flush_seconds or 0) < time.perf_counter() - started
        assert drain.gauge("meter_queue_depth") == 0
    finally:
        await drain.drainer.close(10)
    assert await stored_ids(postgres.url, [request_id(e) for e in events]) == {
        request_id(e) for e in events
    }


async def test_a_few_events_are_written_after_the_flush_interval(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """Fewer events than a batch are written once the flush interval has passed, without
    waiting for more."""
    drain = new_drain(app_url_of(postgres.url), tmp_path, batch_max=1000, interval_s=0.05)
    await drain.drainer.start()
    try:
        drain.queue.put(good_event(workspace))
        await until(lambda: drain.count("written") == 1, "one written")
        assert drain.gauge("meter_queue_depth") == 0
    finally:
        await drain.drainer.close(10)


async def test_the_queue_depth_gauge_reads_the_queue(tmp_path: Path, workspace: str) -> None:
    """`meter_queue_depth` is the queue's length at scrape time; `meter_spool_bytes` the
    spool's size."""
    drain = new_drain("postgresql://nobody@/none?host=/nonexistent", tmp_path)
    for _ in range(3):
        drain.queue.put(good_event(workspace))
    assert drain.gauge("meter_queue_depth") == 3
    assert await drain.spool.append([good_event(workspace)])
    assert drain.gauge("meter_spool_bytes") == drain.spool.size > 0
    drain.spool.close()


async def test_an_outage_is_spooled_and_replayed_when_the_database_is_back(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """With the database unreachable, events are retried and spooled (counted so), never
    rejected; new events wait in the spool too; once it answers again everything is
    written and the spool emptied."""
    async with gate_for(postgres) as gate:
        drain = new_drain(gate.url(app_url_of(postgres.url)), tmp_path, interval_s=0.02)
        await gate.shut()
        await drain.drainer.start()
        try:
            first = [good_event(workspace) for _ in range(5)]
            for event in first:
                drain.queue.put(event)
            await until(lambda: drain.count("spooled") >= 5, "the first events spooled")
            assert drain.count("retried") >= 5
            later = [good_event(workspace) for _ in range(4)]
            for event in later:
                drain.queue.put(event)
            await until(lambda: drain.count("spooled") >= 9, "the later events spooled")
            assert drain.gauge("meter_spool_bytes") > 0
            await gate.open()
            await until(lambda: drain.count("written") == 9, "all written after the outage")
            await until(lambda: drain.gauge("meter_spool_bytes") == 0, "the spool emptied")
            assert drain.count("rejected") == 0
        finally:
            await drain.drainer.close(10)
    ids = [request_id(e) for e in first + later]
    assert await stored_ids(postgres.url, ids) == set(ids)


async def test_a_connection_cut_between_batches_is_an_outage_not_a_rejection(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """The writer's connection is cut while the database still answers: the next batch
    is retried on a new connection and written; nothing is set aside."""
    async with gate_for(postgres) as gate:
        drain = new_drain(gate.url(app_url_of(postgres.url)), tmp_path, interval_s=0.02)
        await drain.drainer.start()
        try:
            drain.queue.put(good_event(workspace))
            await until(lambda: drain.count("written") == 1, "the first written")
            gate.cut()
            events = [good_event(workspace) for _ in range(3)]
            for event in events:
                drain.queue.put(event)
            await until(lambda: drain.count("written") == 4, "the rest written")
            assert drain.count("rejected") == 0
            assert not list(drain.dead_dir.glob("*.jsonl"))
        finally:
            await drain.drainer.close(10)


async def test_closing_flushes_the_queue(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """Events queued just before shutdown are written by `close`, not left behind."""
    drain = new_drain(app_url_of(postgres.url), tmp_path, interval_s=30.0)
    await drain.drainer.start()
    events = [good_event(workspace) for _ in range(7)]
    for event in events:
        drain.queue.put(event)
    await drain.drainer.close(10)
    assert drain.count("written") == 7
    ids = [request_id(e) for e in events]
    assert await stored_ids(postgres.url, ids) == set(ids)


async def test_what_is_spooled_at_exit_is_written_by_the_next_process(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """Closing with the database unreachable spools the queue (nothing dropped); the
    next drainer over the same data directory adopts that spool at start and writes
    it."""
    events = [good_event(workspace) for _ in range(6)]
    async with gate_for(postgres) as gate:
        first = new_drain(gate.url(app_url_of(postgres.url)), tmp_path, interval_s=30.0)
        await gate.shut()
        await first.drainer.start()
        for event in events:
            first.queue.put(event)
        await first.drainer.close(5)
        assert first.count("spooled") == 6
        assert first.count("dropped") == 0
        assert len(first.queue) == 0
    second = new_drain(app_url_of(postgres.url), tmp_path, interval_s=0.02)
    await second.drainer.start()
    try:
        await until(lambda: second.count("written") == 6, "the adopted spool written")
    finally:
        await second.drainer.close(10)
    ids = [request_id(e) for e in events]
    assert await stored_ids(postgres.url, ids) == set(ids)


async def test_events_that_fit_nowhere_at_exit_are_dropped_and_counted(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """Closing with the database unreachable and the spool full: what is left is lost,
    and counted as dropped (on the queue too) and as a fail-open of the meter."""
    async with gate_for(postgres) as gate:
        drain = new_drain(
            gate.url(app_url_of(postgres.url)),
            tmp_path,
            interval_s=30.0,
            spool_bytes=10,
            queue_max=4,
        )
        await gate.shut()
        await drain.drainer.start()
        for _ in range(5):  # the fifth is dropped by the full queue itself
            drain.queue.put(good_event(workspace))
        await drain.drainer.close(5)
    assert drain.count("dropped") == 4
    assert drain.fail_open("queue_and_spool_full") == 4
    assert drain.queue.dropped == 5
    assert len(drain.queue) == 0


async def test_a_refused_event_with_the_dead_letter_file_full_is_dropped_and_counted(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """An event Postgres refuses when the dead-letter file has no room: dropped, counted
    as dropped and as a fail-open of the meter (`dead_letter_full`), never rejected; the
    events around it are written."""
    drain = new_drain(app_url_of(postgres.url), tmp_path, dead_bytes=10)
    await drain.drainer.start()
    try:
        drain.queue.put(good_event(workspace))
        drain.queue.put(good_event(workspace, baseline_model="gpt\x00-4o"))
        drain.queue.put(good_event(workspace))
        await until(lambda: drain.count("dropped") == 1, "the refused event dropped")
        await until(lambda: drain.count("written") == 2, "the others written")
        assert drain.fail_open("dead_letter_full") == 1
        assert drain.count("rejected") == 0
    finally:
        await drain.drainer.close(10)


async def test_a_dead_letter_file_that_cannot_be_written_drops_and_counts(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """When the dead-letter file cannot be written at all (its directory is a file), a
    refused event is dropped and counted like a full file, and the drainer goes on."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    drain = new_drain(app_url_of(postgres.url), tmp_path, dead_dir=blocked)
    await drain.drainer.start()
    try:
        drain.queue.put(good_event(workspace, baseline_model="gpt\x00-4o"))
        drain.queue.put(good_event(workspace))
        await until(lambda: drain.count("written") == 1, "the good event written")
        assert drain.count("dropped") == 1
        assert drain.fail_open("dead_letter_full") == 1
        assert drain.count("rejected") == 0
    finally:
        await drain.drainer.close(10)


async def test_a_connection_lost_in_the_middle_of_a_write_is_an_outage(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """The writer's connection breaks while a batch is being written, and the database
    answers every probe: the batch is an outage (retried and written), never taken for
    events Postgres refused and set aside."""
    async with gate_for(postgres) as gate:
        drain = new_drain(gate.url(app_url_of(postgres.url)), tmp_path, interval_s=0.02)
        await drain.drainer.start()
        try:
            drain.queue.put(good_event(workspace))
            await until(lambda: drain.count("written") == 1, "the first written")
            gate.stall()
            events = [good_event(workspace) for _ in range(3)]
            for event in events:
                drain.queue.put(event)
            await until(lambda: gate.held > 0, "the write under way")
            gate.cut()
            gate.resume()
            await until(lambda: drain.count("written") == 4, "the batch written")
            assert drain.count("retried") >= 3
            assert drain.count("rejected") == 0
        finally:
            await drain.drainer.close(10)
    ids = [request_id(e) for e in events]
    assert await stored_ids(postgres.url, ids) == set(ids)


async def test_retries_back_off_while_the_database_is_unreachable(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """An outage is retried on a doubling backoff (50 ms, 100 ms, 200 ms, ...), not at
    every flush interval: four attempts take at least 0.3 s, even after the database had
    been answering."""
    async with gate_for(postgres) as gate:
        drain = new_drain(gate.url(app_url_of(postgres.url)), tmp_path, interval_s=0.005)
        await drain.drainer.start()
        try:
            drain.queue.put(good_event(workspace))
            await until(lambda: drain.count("written") == 1, "a first write")
            await gate.shut()
            drain.queue.put(good_event(workspace))
            await until(lambda: drain.count("retried") >= 1, "the first attempt")
            first = time.monotonic()
            await until(lambda: drain.count("retried") >= 4, "the fourth attempt")
            assert time.monotonic() - first >= 0.3
        finally:
            await drain.drainer.close(5)


async def test_closing_is_bounded_when_the_database_hangs(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """The database stops answering without closing anything: `close` returns after its
    timeout, not after the writer's."""
    async with gate_for(postgres) as gate:
        drain = new_drain(
            gate.url(app_url_of(postgres.url)), tmp_path, interval_s=30.0, write_timeout_s=30.0
        )
        gate.stall()
        await drain.drainer.start()
        drain.queue.put(good_event(workspace))
        started = time.monotonic()
        await drain.drainer.close(0.3)
        assert time.monotonic() - started < 10
        gate.resume()


async def test_a_drainer_closed_before_it_started_closes_cleanly(tmp_path: Path) -> None:
    """A lifespan that fails before the drainer starts still closes it without error."""
    drain = new_drain("postgresql://nobody@/none?host=/nonexistent", tmp_path)
    await drain.drainer.close(1)


async def test_the_drainer_runs_as_one_named_task_that_close_ends(
    tmp_path: Path, workspace: str
) -> None:
    """The drainer is one task named `meter-drainer` (what an operator sees in a task
    dump), and `close` ends it."""
    drain = new_drain("postgresql://nobody@/none?host=/nonexistent", tmp_path)
    await drain.drainer.start()
    named = [t for t in asyncio.all_tasks() if t.get_name() == "meter-drainer"]
    assert len(named) == 1
    await drain.drainer.close(5)
    assert named[0].done()


async def test_events_that_trickle_in_are_written_together_at_the_flush_interval(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """Events that arrive one by one, fewer than a batch, wait for the flush interval and
    go in one transaction, before the first write and after it alike: never one
    transaction each."""
    drain = new_drain(app_url_of(postgres.url), tmp_path, batch_max=100, interval_s=1.0)
    await drain.drainer.start()
    try:
        for _ in range(3):
            drain.queue.put(good_event(workspace))
            await asyncio.sleep(0.02)
        await until(lambda: drain.count("written") == 3, "the first three written")
        for _ in range(3):
            drain.queue.put(good_event(workspace))
            await asyncio.sleep(0.02)
        await until(lambda: drain.count("written") == 6, "the next three written")
        assert drain.batches() == (2.0, 6.0)
    finally:
        await drain.drainer.close(10)


async def test_an_outage_is_retried_after_50_ms_then_on_a_doubling_backoff(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """With a flush interval of 5 s, the first retry still comes after the first backoff
    step (50 ms), so a database that is back at once loses no time; the next ones double
    (100 ms, 200 ms, ...): six attempts take about 1.55 s, not the 6 s a tripling
    backoff would."""
    async with gate_for(postgres) as gate:
        drain = new_drain(gate.url(app_url_of(postgres.url)), tmp_path, batch_max=1, interval_s=5.0)
        await gate.shut()
        await drain.drainer.start()
        try:
            drain.queue.put(good_event(workspace))  # a full batch: the drainer wakes
            await until(lambda: drain.count("retried") >= 1, "the first attempt")
            first = time.monotonic()
            await until(lambda: drain.count("retried") >= 2, "the first retry")
            assert time.monotonic() - first < 0.7
            await until(lambda: drain.count("retried") >= 6, "the sixth attempt")
            assert 1.4 <= time.monotonic() - first < 4.5
        finally:
            await drain.drainer.close(5)


async def test_a_second_outage_after_a_recovery_is_retried_from_the_first_step(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """The backoff starts over once a write succeeds: a second outage after a recovery
    is retried 50 ms after its first failure (not after the first outage's last step),
    and everything from both outages is written once the database is back."""
    async with gate_for(postgres) as gate:
        drain = new_drain(gate.url(app_url_of(postgres.url)), tmp_path, batch_max=1, interval_s=5.0)
        await gate.shut()
        await drain.drainer.start()
        try:
            first = good_event(workspace)
            drain.queue.put(first)
            await until(lambda: drain.count("retried") >= 4, "retries of the first outage")
            await gate.open()
            await until(lambda: drain.count("written") >= 1, "written after the first outage")
            await gate.shut()
            tried = drain.count("retried")
            second = good_event(workspace)
            drain.queue.put(second)  # a full batch: the drainer wakes
            await until(lambda: drain.count("retried") >= tried + 1, "the second outage's try")
            began = time.monotonic()
            await until(lambda: drain.count("retried") >= tried + 2, "its first retry")
            assert time.monotonic() - began < 0.7  # 50 ms, not the 400 ms step reached before
            await gate.open()
            await until(lambda: drain.count("written") >= 2, "written after the second outage")
        finally:
            await drain.drainer.close(5)
    ids = [request_id(first), request_id(second)]
    assert await stored_ids(postgres.url, ids) == set(ids)


async def test_events_that_arrive_during_the_backoff_are_spooled_without_a_retry(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """While the drainer waits out its backoff, new events go to the spool at the next
    flush interval (the queue stays free for requests) without another attempt at the
    database; once it answers, each is written once."""
    async with gate_for(postgres) as gate:
        drain = new_drain(
            gate.url(app_url_of(postgres.url)), tmp_path, batch_max=2, interval_s=0.01
        )
        await gate.shut()
        await drain.drainer.start()
        try:
            events = [good_event(workspace)]
            drain.queue.put(events[0])
            # after the fifth attempt the drainer waits 0.8 s before the next
            await until(lambda: drain.count("retried") >= 5, "five attempts")
            tried = drain.count("retried")
            events += [good_event(workspace) for _ in range(5)]
            for event in events[1:]:
                drain.queue.put(event)
            await until(lambda: len(drain.queue) == 0, "the new events spooled")
            assert drain.count("spooled") == 6
            assert drain.count("retried") == tried
            await gate.open()
            await until(
                lambda: drain.count("written") == 6 and drain.gauge("meter_spool_bytes") == 0,
                "everything written and the spool emptied",
            )
            assert drain.drainer.written == 6
        finally:
            await drain.drainer.close(10)
    ids = [request_id(e) for e in events]
    assert await stored_ids(postgres.url, ids) == set(ids)


async def test_a_replay_cut_off_part_way_resumes_where_it_stopped(
    postgres: Postgres, workspace: str, other_workspace: str, tmp_path: Path
) -> None:
    """Five batches spooled during an outage; a replay that fails at its first batch
    leaves the spool as it was. The next writes the first two, sets the
    refused event of the third aside, and is cut off writing the rest of it (its
    workspace's row is held by another transaction when the connection drops). The
    next replays write that rest and the fourth and fifth batches: every event is
    written or set aside exactly once, none lost. A later outage's spool is replayed
    whole too."""
    async with gate_for(postgres) as gate:
        drain = new_drain(
            gate.url(app_url_of(postgres.url)),
            tmp_path,
            batch_max=2,
            interval_s=0.01,
            write_timeout_s=30.0,
        )
        await gate.shut()
        await drain.drainer.start()
        lock = await WorkspaceLock.hold(postgres, other_workspace)
        try:
            first = [good_event(workspace) for _ in range(4)]
            refused = good_event(workspace, baseline_model="gpt\x00-4o")
            held = good_event(other_workspace)
            last = [good_event(workspace) for _ in range(4)]
            for event in [*first, refused, held, *last]:
                drain.queue.put(event)
            await until(lambda: drain.count("spooled") == 10, "five batches spooled")
            tried = drain.count("retried")
            await until(lambda: drain.count("retried") > tried, "a replay failing at once")
            await gate.open()
            await until_waited_on(lock)
            assert (drain.count("written"), drain.count("rejected")) == (4, 1)
            gate.cut()
            await until(lambda: drain.count("written") == 8, "the fourth and fifth written")
            await lock.release()
            await until(
                lambda: drain.count("written") == 9 and drain.gauge("meter_spool_bytes") == 0,
                "the rest of the third written and the spool emptied",
            )
            assert (drain.drainer.written, drain.count("rejected")) == (9, 1)

            await gate.shut()
            later = [good_event(workspace) for _ in range(4)]
            for event in later:
                drain.queue.put(event)
            await until(lambda: drain.count("spooled") == 14, "the later outage spooled")
            await gate.open()
            await until(
                lambda: drain.count("written") == 13 and drain.gauge("meter_spool_bytes") == 0,
                "the later spool written whole",
            )
            assert drain.drainer.written == 13
        finally:
            await lock.release()
            await drain.drainer.close(10)
    ids = [request_id(e) for e in [*first, held, *last, *later]]
    assert await stored_ids(postgres.url, ids) == set(ids)


async def test_an_event_that_cannot_be_written_in_time_is_set_aside_not_retried(
    postgres: Postgres, other_workspace: str, tmp_path: Path
) -> None:
    """A write that runs out of time while the database answers a probe (here: its
    workspace's row held by a long transaction) is taken for an event too slow to
    write: it is set aside in the dead-letter file and counted as rejected, not retried
    as an outage for ever."""
    drain = new_drain(app_url_of(postgres.url), tmp_path, interval_s=0.01, write_timeout_s=0.3)
    lock = await WorkspaceLock.hold(postgres, other_workspace)
    await drain.drainer.start()
    try:
        drain.queue.put(good_event(other_workspace))
        await until(lambda: drain.count("rejected") == 1, "the slow event set aside")
        assert drain.count("retried") == 0
        assert list(drain.dead_dir.glob("*.jsonl"))
    finally:
        await lock.release()
        await drain.drainer.close(10)
