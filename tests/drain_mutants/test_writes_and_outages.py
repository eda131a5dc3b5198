"""Events are written in batches of at most RECOVEA_METER_BATCH_MAX, or after the
flush interval; an outage is retried and spooled, never rejected, and replayed when
the database is back; a connection cut between batches or mid-write is an outage
too; closing flushes what is queued (or spools it) and the next process adopts and
writes what was spooled; what is lost is counted (a full dead-letter file, a full
spool at exit) under `meter_events_total` and `gateway_fail_open_total`; the queue
and spool gauges read the live values; closing is bounded when the database hangs.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.db_gate import gate_for
from tests.drain_mutants.support import (
    new_drain,
    request_id,
    until,
)
from tests.drain_support import app_url_of, good_event, stored_ids
from tests.support import Postgres


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
