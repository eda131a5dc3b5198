"""The drainer's task and its timing: it closes cleanly before it started and runs as
one named task that closing ends; events that trickle in are written together at the
flush interval; an outage is retried after 50 ms then on a doubling backoff, from
the first step again after a recovery, with events that arrive meanwhile spooled
without a retry; a replay cut off part way resumes where it stopped; an event that
cannot be written in time is set aside, not retried.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.db_gate import gate_for
from tests.drain_mutants.support import (
    WorkspaceLock,
    new_drain,
    request_id,
    until,
    until_waited_on,
)
from tests.drain_support import app_url_of, good_event, stored_ids
from tests.support import Postgres


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
            # counted once the spool has them, a moment after the queue gave them up
            await until(lambda: drain.count("spooled") == 6, "the new events spooled")
            assert len(drain.queue) == 0
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
