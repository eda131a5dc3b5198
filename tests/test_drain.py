"""The drain: events go from a bounded queue to Postgres off the hot path; while the
database is down they are retried and spooled, and written when it returns. Nothing
is lost on a clean shutdown; `sent = written + dropped` holds exactly."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, owner_query
from tests.support import Gateway, MockServer, Postgres, metric_value, wait_until

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "drain"}]}


def rows_of(url: str, tenant: Tenant) -> int:
    found = owner_query(
        url,
        "SELECT count(*) AS n FROM recovea.request_events WHERE customer_id = $1::uuid",
        tenant.workspace,
    )
    return int(found[0]["n"])


def meter(gateway: Gateway, outcome: str) -> float:
    return metric_value(gateway.metrics(), "meter_events_total", outcome=outcome)


def send(gateway: Gateway, tenant: Tenant, count: int) -> list[float]:
    """`count` requests, one after another; their latencies (each must succeed)."""
    latencies = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post(
                f"{gateway.url}/v1/chat/completions", json=BODY, headers=tenant.bearer
            )
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return latencies


def spool_settings(
    mock: MockServer, env: dict[str, str], data_dir: Path, **meter: str
) -> dict[str, str]:
    """A gateway whose data dir (and so its spool) outlives it, for the next process."""
    return {**upstream_env(mock), **env, "RECOVEA_DATA_DIR": str(data_dir), **meter}


def own_env(server: Postgres, workdir: Path) -> dict[str, str]:
    return {
        "RECOVEA_DATABASE_URL": server.url,
        "RECOVEA_MASTER_KEY_FILE": str(workdir / "master.key"),
    }


def test_n_concurrent_requests_leave_exactly_n_rows(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    tenant = make_tenant(db_env, "drain-concurrent")
    count = 300

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{gateway.url}/v1/chat/completions", json=BODY, headers=tenant.bearer
                    )
                    for _ in range(count)
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * count
    wait_until(lambda: rows_of(postgres.url, tenant) >= count, 20, "every row")
    assert rows_of(postgres.url, tenant) == count


def test_database_down_during_load_loses_nothing(
    mock: MockServer, workdir: Path, own_postgres: Postgres
) -> None:
    env = own_env(own_postgres, workdir)
    tenant = make_tenant(env, "drain-outage")
    gateway = Gateway(
        {**upstream_env(mock), **env, "RECOVEA_METER_FLUSH_INTERVAL_S": "0.05"}, workdir
    )
    try:
        before = send(gateway, tenant, 20)  # warms the key caches too
        wait_until(lambda: meter(gateway, "written") == 20, 15, "warm-up rows")

        load_errors: list[BaseException] = []
        during: list[float] = []
        stop_load = threading.Event()

        def load() -> None:
            try:
                while not stop_load.is_set():
                    during.extend(send(gateway, tenant, 5))
            except BaseException as exc:
                load_errors.append(exc)

        worker = threading.Thread(target=load)
        worker.start()
        wait_until(lambda: len(during) >= 10, 15, "load running")
        own_postgres.stop()
        wait_until(lambda: meter(gateway, "spooled") >= 20, 20, "events spooled")
        outage_sent = len(during)
        own_postgres.start()
        wait_until(lambda: len(during) >= outage_sent + 20, 15, "load after the restart")
        stop_load.set()
        worker.join(30)
        assert not load_errors, load_errors
        sent = len(before) + len(during)
        wait_until(lambda: meter(gateway, "written") >= sent, 30, "every event written")
        metrics = gateway.metrics()
        assert metric_value(metrics, "meter_events_total", outcome="retried") > 0
        assert metric_value(metrics, "meter_events_total", outcome="spooled") >= 20
        dropped = metric_value(metrics, "meter_events_total", outcome="dropped")
        written = metric_value(metrics, "meter_events_total", outcome="written")
        assert (written, dropped) == (sent, 0)
        assert rows_of(own_postgres.url, tenant) == sent
        # The outage never reached the requests: no slower than a second at worst.
        assert max(during) < 1.0, max(during)
    finally:
        gateway.stop()


def test_sigterm_flushes_the_queue(
    mock: MockServer, workdir: Path, db_env: dict[str, str], postgres: Postgres
) -> None:
    tenant = make_tenant(db_env, "drain-sigterm")
    gateway = Gateway(
        {
            **upstream_env(mock),
            **db_env,
            "RECOVEA_METER_FLUSH_INTERVAL_S": "3600",
            "RECOVEA_METER_BATCH_MAX": "100000",
        },
        workdir,
    )
    try:
        send(gateway, tenant, 40)
        wait_until(lambda: metric_value(gateway.metrics(), "meter_queue_depth") == 40, 10, "queued")
        assert rows_of(postgres.url, tenant) == 0
    finally:
        assert gateway.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert rows_of(postgres.url, tenant) == 40


def test_sigterm_with_the_database_down_spools_and_the_next_process_replays(
    mock: MockServer, workdir: Path, own_postgres: Postgres
) -> None:
    env = own_env(own_postgres, workdir)
    tenant = make_tenant(env, "drain-sigterm-down")
    data_dir = workdir / "drain-shared-data"
    settings = spool_settings(
        mock,
        env,
        data_dir,
        RECOVEA_METER_FLUSH_INTERVAL_S="3600",
        RECOVEA_METER_BATCH_MAX="100000",
    )
    first = Gateway(settings, workdir)
    try:
        send(first, tenant, 1)
        own_postgres.stop()
        send(first, tenant, 24)
    finally:
        assert first.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    spooled = list((data_dir / "spool").glob("meter-*.jsonl"))
    assert spooled and sum(path.stat().st_size for path in spooled) > 0
    own_postgres.start()
    second = Gateway({**settings, "RECOVEA_METER_FLUSH_INTERVAL_S": "0.05"}, workdir)
    try:
        wait_until(lambda: rows_of(own_postgres.url, tenant) == 25, 20, "replayed rows")
        wait_until(lambda: not any(p.stat().st_size for p in spooled if p.exists()), 10, "spool")
    finally:
        second.stop()


def test_sigkill_loses_at_most_what_was_in_memory(
    mock: MockServer, workdir: Path, own_postgres: Postgres
) -> None:
    """Spooled batches survive SIGKILL and are adopted by the next process."""
    env = own_env(own_postgres, workdir)
    tenant = make_tenant(env, "drain-sigkill")
    data_dir = workdir / "drain-killed-data"
    settings = spool_settings(mock, env, data_dir, RECOVEA_METER_FLUSH_INTERVAL_S="0.05")
    first = Gateway(settings, workdir)
    try:
        send(first, tenant, 1)
        wait_until(lambda: meter(first, "written") == 1, 15, "first row")
        own_postgres.stop()
        send(first, tenant, 30)
        wait_until(lambda: meter(first, "spooled") == 30, 20, "everything spooled")
        assert metric_value(first.metrics(), "meter_queue_depth") == 0
    finally:
        first.stop(signal.SIGKILL)
    own_postgres.start()
    second = Gateway(settings, workdir)
    try:
        wait_until(lambda: rows_of(own_postgres.url, tenant) == 31, 20, "adopted spool")
    finally:
        second.stop()


def test_with_queue_and_spool_full_events_are_dropped_and_counted(
    mock: MockServer, workdir: Path, own_postgres: Postgres
) -> None:
    env = own_env(own_postgres, workdir)
    tenant = make_tenant(env, "drain-full")
    gateway = Gateway(
        {
            **upstream_env(mock),
            **env,
            "RECOVEA_METER_QUEUE_MAX": "5",
            "RECOVEA_METER_SPOOL_MAX_MB": "0",
            "RECOVEA_METER_FLUSH_INTERVAL_S": "0.05",
        },
        workdir,
    )
    try:
        send(gateway, tenant, 1)
        wait_until(lambda: meter(gateway, "written") == 1, 15, "first row")
        own_postgres.stop()
        send(gateway, tenant, 40)  # every request still succeeds
        dropped = meter(gateway, "dropped")
        assert dropped >= 30
        metrics = gateway.metrics()
        assert metric_value(metrics, "gateway_fail_open_total", layer="meter") == dropped
        own_postgres.start()
        wait_until(lambda: meter(gateway, "written") + dropped == 41, 30, "the rest written")
        assert rows_of(own_postgres.url, tenant) == 41 - dropped
    finally:
        gateway.stop()


def postgres_processes(server: Postgres) -> list[int]:
    """The postmaster and its children."""
    from recovea_proxy.store.embedded import postmaster_pid

    master = postmaster_pid(server.data_dir)
    assert master is not None
    children = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (entry / "stat").exists() and _ppid(entry) == master
    ]
    return [master, *children]


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_a_frozen_database_never_holds_a_request(
    mock: MockServer, workdir: Path, own_postgres: Postgres
) -> None:
    """Postgres stopped with SIGSTOP (reachable, never answering): requests go on at
    normal speed; the rows arrive once it thaws."""
    env = own_env(own_postgres, workdir)
    tenant = make_tenant(env, "drain-frozen")
    gateway = Gateway({**upstream_env(mock), **env}, workdir)
    frozen: list[int] = []
    try:
        send(gateway, tenant, 1)
        wait_until(lambda: meter(gateway, "written") == 1, 15, "first row")
        frozen = postgres_processes(own_postgres)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        latencies = send(gateway, tenant, 30)
        assert max(latencies) < 1.0, max(latencies)
        assert meter(gateway, "written") == 1
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    try:
        wait_until(lambda: meter(gateway, "written") == 31, 30, "rows after the thaw")
        assert rows_of(own_postgres.url, tenant) == 31
        assert meter(gateway, "dropped") == 0
    finally:
        gateway.stop()


def test_maintenance_faults_are_counted_and_never_reach_requests(
    mock: MockServer, workdir: Path, own_postgres: Postgres
) -> None:
    """With the database gone, the scheduled partitions/rollup round fails, is counted,
    and requests go on; the next round after the restart succeeds."""
    env = own_env(own_postgres, workdir)
    tenant = make_tenant(env, "drain-maintenance")
    gateway = Gateway(
        {**upstream_env(mock), **env, "RECOVEA_MAINTENANCE_INTERVAL_S": "0.1"}, workdir
    )

    def runs(outcome: str) -> float:
        return metric_value(gateway.metrics(), "recovea_maintenance_runs_total", outcome=outcome)

    try:
        send(gateway, tenant, 1)
        wait_until(lambda: runs("ok") >= 1, 15, "a maintenance round")
        own_postgres.stop()
        wait_until(lambda: runs("error") >= 1, 15, "a failed round")
        send(gateway, tenant, 5)
        own_postgres.start()
        ok_before = runs("ok")
        wait_until(lambda: runs("ok") > ok_before, 30, "a round after the restart")
        wait_until(lambda: rows_of(own_postgres.url, tenant) == 6, 30, "every row")
    finally:
        gateway.stop()


def test_a_steady_stream_is_written_once_per_interval_not_chased(
    mock: MockServer, workdir: Path, db_env: dict[str, str], postgres: Postgres
) -> None:
    """Under steady traffic the drainer writes what was waiting once per flush
    interval; events arriving during a write wait for the next pass instead of
    turning the stream into a chain of tiny transactions (each paying a batch's
    fixed cost in the gateway's CPU)."""
    tenant = make_tenant(db_env, "drain-steady")
    interval = 0.25
    gateway = Gateway(
        {**upstream_env(mock), **db_env, "RECOVEA_METER_FLUSH_INTERVAL_S": str(interval)},
        workdir,
    )
    try:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 2.0:
            send(gateway, tenant, 10)
            sent += 10
        elapsed = time.monotonic() - started
        wait_until(lambda: rows_of(postgres.url, tenant) == sent, 10, "all written")
        batches = metric_value(gateway.metrics(), "meter_batch_size_count")
        # one pass per interval (plus the pass under way when the load began and ended)
        assert 1 <= batches <= elapsed / interval + 3, (batches, sent)
        assert meter(gateway, "written") >= sent
    finally:
        gateway.stop()
