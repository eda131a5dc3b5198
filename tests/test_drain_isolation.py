"""One bad event never blocks the others: the drainer tells an event Postgres refuses
for its content (set aside in the dead-letter file, counted `rejected`) from an
outage (retried, spooled), and a deleted workspace's queued or spooled events are
discarded. A real drainer writes into the session's real Postgres."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovea_proxy.meter.queue import Item
from recovea_proxy.meter.retention import delete_workspace
from recovea_proxy.meter.spool import Spool
from recovea_proxy.store.database import connect
from tests.drain_support import (
    COLUMN,
    app_url_of,
    good_event,
    prepare,
    running_drain,
    stored_ids,
)
from tests.support import Postgres, short_tmpdir


@pytest.fixture(scope="module")
def workspaces(postgres: Postgres) -> list[str]:
    return asyncio.run(prepare(postgres.url, ["iso-a", "iso-b"]))


def request_id(event: Item) -> str:
    return str(event[COLUMN["request_id"]])


async def test_one_refused_event_is_set_aside_and_the_rest_of_its_batch_is_written(
    postgres: Postgres, workspaces: list[str], tmp_path: Path
) -> None:
    """A NUL in one event's model (Postgres refuses it) costs that event alone: the 60
    around it are written, it lands in the dead-letter file with the reason."""
    good = [good_event(workspaces[0]) for _ in range(60)]
    bad = good_event(workspaces[0], baseline_model="gpt\x00-4o")
    batch = [*good[:30], bad, *good[30:]]
    async with running_drain(app_url_of(postgres.url), tmp_path) as drain:
        for event in batch:
            drain.queue.put(event)
        await drain.settled(len(batch))
        assert drain.count("written") == 60
        assert drain.count("rejected") == 1
        assert drain.count("spooled") == 0
        letters = drain.dead_letters()
    assert [letter["event"]["request_id"] for letter in letters] == [request_id(bad)]
    assert letters[0]["reason"].startswith("CharacterNotInRepertoireError")
    assert letters[0]["event"]["baseline_model"] == "gpt\x00-4o"
    assert await stored_ids(postgres.url, [request_id(e) for e in good]) == {
        request_id(e) for e in good
    }


async def test_values_the_driver_cannot_encode_are_set_aside_too(
    postgres: Postgres, workspaces: list[str], tmp_path: Path
) -> None:
    """A lone surrogate, a count beyond the column, a string where a number belongs:
    each refused by asyncpg's encoder before Postgres sees it, each set aside alone."""
    bad = [
        good_event(workspaces[0], feature="a\ud800b"),
        good_event(workspaces[0], input_tokens=2**40),
        good_event(workspaces[0], output_tokens="many"),
    ]
    good = [good_event(workspaces[1]) for _ in range(5)]
    async with running_drain(app_url_of(postgres.url), tmp_path) as drain:
        for event in [bad[0], *good[:2], bad[1], *good[2:], bad[2]]:
            drain.queue.put(event)
        await drain.settled(8)
        assert (drain.count("written"), drain.count("rejected")) == (5, 3)
        reasons = sorted(letter["reason"].split(":")[0] for letter in drain.dead_letters())
    assert reasons == ["OverflowError", "TypeError", "UnicodeEncodeError"]


async def test_a_spooled_batch_with_a_refused_event_never_holds_back_newer_events(
    postgres: Postgres, workspaces: list[str], tmp_path: Path
) -> None:
    """A spool left behind by an earlier process holds a poisoned batch: the new
    events are written, the poisoned batch's good events too, its bad one set aside,
    and the spool is emptied."""
    spooled_good = [good_event(workspaces[0]) for _ in range(4)]
    poison = good_event(workspaces[0], trace_id=None)  # NOT NULL column
    earlier = Spool(tmp_path / "spool", 1 << 20)
    assert await earlier.append([*spooled_good, poison])
    earlier.close()
    fresh = [good_event(workspaces[1]) for _ in range(3)]
    async with running_drain(app_url_of(postgres.url), tmp_path) as drain:
        for event in fresh:
            drain.queue.put(event)
        await drain.settled(8)
        assert (drain.count("written"), drain.count("rejected")) == (7, 1)
        assert [letter["event"]["request_id"] for letter in drain.dead_letters()] == [
            request_id(poison)
        ]
    ids = [request_id(e) for e in [*spooled_good, *fresh]]
    assert await stored_ids(postgres.url, ids) == set(ids)
    assert not list((tmp_path / "spool").glob("*.jsonl")), "the spool was not emptied"


async def test_an_outage_is_retried_and_spooled_never_rejected(
    own_postgres: Postgres, tmp_path: Path
) -> None:
    """With the database gone, nothing is set aside: events are retried and spooled,
    and written when it is back."""
    [workspace] = await prepare(own_postgres.url, ["outage"])
    events = [good_event(workspace) for _ in range(10)]
    async with running_drain(app_url_of(own_postgres.url), tmp_path) as drain:
        own_postgres.stop()
        for event in events:
            drain.queue.put(event)
        while drain.count("spooled") < len(events):
            drain.queue.wake.set()
            await _tick()
        assert drain.count("rejected") == 0
        own_postgres.start()
        await drain.settled(len(events))
        assert (drain.count("written"), drain.count("rejected")) == (10, 0)
    ids = [request_id(e) for e in events]
    assert await stored_ids(own_postgres.url, ids) == set(ids)


async def test_a_deleted_workspaces_queued_and_spooled_events_are_discarded(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Events queued (or spooled) before their workspace was deleted are not written
    afterwards; another workspace's events in the same batches are."""
    gone, kept = await prepare(postgres.url, ["deleted-later", "kept"])
    spooled = [good_event(gone), good_event(kept)]
    earlier = Spool(tmp_path / "spool", 1 << 20)
    assert await earlier.append(spooled)
    earlier.close()
    queued = [good_event(gone), good_event(kept), good_event(gone)]
    conn = await connect(postgres.url)
    try:
        assert await delete_workspace(conn, gone)
    finally:
        await conn.close()
    async with running_drain(app_url_of(postgres.url), tmp_path) as drain:
        for event in queued:
            drain.queue.put(event)
        await drain.settled(5)
        assert (drain.count("written"), drain.count("discarded")) == (2, 3)
    ids = [request_id(e) for e in [*spooled, *queued]]
    assert await stored_ids(postgres.url, ids) == {
        request_id(spooled[1]),
        request_id(queued[1]),
    }


async def _tick() -> None:
    await asyncio.sleep(0.01)


# -- Any value in any field -------------------------------------------------------------

_BIG = "x" * 10_000_000
_hostile_text = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=())),
    st.text(st.characters(categories=["Cs", "Cc"]), min_size=1),  # lone surrogates, controls
    st.just("\x00"),
    st.just(_BIG),
    st.text(max_size=5).map(lambda t: t + "\x00"),
)
_hostile = st.one_of(
    st.none(),
    _hostile_text,
    st.integers(),
    st.integers(min_value=2**31 - 2, max_value=2**70),
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def hostile_events(draw: st.DrawFn, workspaces: list[str]) -> list[Item]:
    """A batch of events, each with a few fields replaced by hostile values."""
    events = []
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        workspace = draw(st.sampled_from([*workspaces, str(uuid.uuid4())]))
        event = list(good_event(workspace))
        names = draw(st.lists(st.sampled_from(list(COLUMN)), max_size=4, unique=True))
        for name in names:
            event[COLUMN[name]] = draw(_hostile)
        events.append(tuple(event))
    return events


@pytest.mark.timeout(600)
@settings(
    derandomize=True,
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_value_in_any_field_ends_written_or_set_aside_and_the_ledger_goes_on(
    postgres: Postgres, workspaces: list[str], data: st.DataObject
) -> None:
    """Whatever the fields hold (any Unicode, NUL, lone surrogates, 10 MB strings,
    huge and negative integers, NaN): every event is written, set aside or discarded
    (unknown workspace), and counted, none lost; a normal event queued afterwards is
    written within two flush intervals."""
    events = data.draw(hostile_events(workspaces))
    asyncio.run(_drain_everything(postgres.url, events, workspaces[0]))


async def _drain_everything(owner: str, events: list[Item], workspace: str) -> None:
    interval = 0.25
    data_dir = short_tmpdir()
    async with running_drain(app_url_of(owner), data_dir, interval_s=interval) as drain:
        for event in events:
            drain.queue.put(event)
        await drain.settled(len(events))
        counted = drain.count("written") + drain.count("rejected") + drain.count("discarded")
        assert counted == len(events)
        assert drain.count("dropped") == 0
        letters = drain.dead_letters()
        assert len(letters) == drain.count("rejected")
        for letter in letters:
            assert letter["reason"]
            orjson.dumps(letter)  # a reader can open every entry

        normal = good_event(workspace)
        queued_at = time.monotonic()
        drain.queue.put(normal)
        await drain.settled(len(events) + 1, deadline_s=10)
        assert time.monotonic() - queued_at <= 2 * interval + 0.5, "the ledger stalled"
    assert await stored_ids(owner, [request_id(normal)]) == {request_id(normal)}
    await asyncio.to_thread(_remove, data_dir)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def test_a_dead_letter_entry_is_json_whatever_the_event_held() -> None:
    """Surrogates are escaped, huge strings cut with a marker, huge integers and odd
    types written as text: the file stays readable line by line."""
    from recovea_proxy.meter.dead_letter import VALUE_MAX, entry

    event = good_event(
        str(uuid.uuid4()), baseline_model="a\ud800b", feature=_BIG, route_path=2**80
    )
    parsed = orjson.loads(entry(event, "TypeError: \udcff odd"))
    assert parsed["event"]["baseline_model"] == "a\\ud800b"
    assert parsed["event"]["feature"].startswith("x" * VALUE_MAX)
    assert parsed["event"]["feature"].endswith(f"[+{len(_BIG) - VALUE_MAX} chars]")
    assert parsed["event"]["route_path"] == str(2**80)
    assert parsed["reason"] == "TypeError: \\udcff odd"
