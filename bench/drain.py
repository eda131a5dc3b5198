"""The metering drain's throughput into the embedded Postgres: how many events per
second one drainer writes (events and their receipts, through COPY into staging and
INSERT … SELECT), and whether a steady offered load is absorbed with no loss.

    python -m bench.drain [--events N] [--rate R --seconds S] [--batch B]

Burst: N events queued at once, timed until all are written. Steady: R events/s
offered for S seconds in 10 ms ticks; reports the highest queue depth seen, and
that written == offered at the end. Rows are realistic: built from request records
by the gateway's own `event_row`, each with a real signed receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recovea_proxy.meter.dead_letter import DeadLetters
from recovea_proxy.meter.drain import Drainer
from recovea_proxy.meter.event import RouteIds, event_row
from recovea_proxy.meter.queue import Item, MeterQueue
from recovea_proxy.meter.receipt_keys import SigningKey
from recovea_proxy.meter.receipts import ReceiptSigner
from recovea_proxy.meter.spool import Spool
from recovea_proxy.meter.writer import EventWriter
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.providers.usage import Usage
from recovea_proxy.record import RequestRecord
from recovea_proxy.store.database import APP_ROLE, connect
from recovea_proxy.store.embedded import embedded_url
from recovea_proxy.store.migrate import apply_migrations


def make_items(count: int, workspaces: list[str]) -> list[Item]:
    signer = ReceiptSigner(SigningKey("rk_bench", Ed25519PrivateKey.generate()))
    routes = RouteIds()
    items: list[Item] = []
    now_ms = time.time_ns() // 1_000_000
    for n in range(count):
        record = RequestRecord(os.urandom(16).hex(), os.urandom(16).hex(), 0, now_ms)
        record.provider, record.route, record.model = "openai", "/v1/chat/completions", "gpt-4o"
        record.workspace_id = workspaces[n % len(workspaces)]
        record.rcv_key_id, record.env, record.feature = str(uuid.uuid4()), "live", "search"
        record.usage = Usage(input_tokens=812, output_tokens=93, cached_tokens=512)
        record.usage.finish_reason = "stop"
        record.success, record.upstream_wait_ns = True, 290_000_000
        record.end(300_000_000)
        signer.sign(record, "0" * 64)
        items.append(event_row(record, routes.id_for(record)))
    return items


async def setup(data_dir: Path, workspaces: int) -> tuple[str, list[str]]:
    owner = await asyncio.to_thread(embedded_url, data_dir)
    conn = await connect(owner)
    try:
        await apply_migrations(conn)
        ids = [str(uuid.uuid4()) for _ in range(workspaces)]
        for index, workspace in enumerate(ids):
            await conn.execute(
                "INSERT INTO recovea.workspaces (customer_id, name) VALUES ($1::uuid, $2)",
                workspace,
                f"bench-{index}",
            )
    finally:
        await conn.close()
    return owner.replace("postgres:@", f"{APP_ROLE}@", 1), ids


def drainer_for(app: str, data_dir: Path, capacity: int, batch: int) -> tuple[Drainer, MeterQueue]:
    metrics = GatewayMetrics()
    queue = MeterQueue(capacity, batch, lambda: None)
    drainer = Drainer(
        queue,
        EventWriter(app),
        Spool(data_dir / "spool", 0),
        DeadLetters(data_dir / "dead-letter", 0),
        metrics,
        batch_max=batch,
        interval_s=0.05,
    )
    return drainer, queue


async def burst(app: str, data_dir: Path, items: list[Item], batch: int) -> tuple[float, float]:
    """(events/s, drainer CPU µs per event in this process)."""
    drainer, queue = drainer_for(app, data_dir, len(items) + 1, batch)
    await drainer.start()
    cpu = time.process_time()
    started = time.perf_counter()
    for item in items:
        queue.put(item)
    while drainer.written < len(items):  # noqa: ASYNC110 - polling a counter, 5 ms grain
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await drainer.close(10)
    return len(items) / elapsed, cpu / len(items) * 1e6


async def steady(
    app: str, data_dir: Path, items: list[Item], rate: int, batch: int
) -> dict[str, float]:
    drainer, queue = drainer_for(app, data_dir, 100_000, batch)
    await drainer.start()
    per_tick = max(1, rate // 100)
    deepest = 0
    started = time.perf_counter()
    offered = 0
    tick = 0
    while offered < len(items):
        tick += 1
        for item in items[offered : offered + per_tick]:
            queue.put(item)
        offered = min(len(items), offered + per_tick)
        deepest = max(deepest, len(queue))
        await asyncio.sleep(max(0.0, started + tick / 100 - time.perf_counter()))
    deadline = time.perf_counter() + 30
    while drainer.written < offered and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    lag = time.perf_counter() - (started + tick / 100)
    await drainer.close(10)
    return {
        "offered": offered,
        "written": drainer.written,
        "dropped": queue.dropped,
        "max_queue_depth": deepest,
        "drain_lag_s": round(lag, 3),
    }


async def main_async(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="rcv-drain-"))
    try:
        app, workspaces = await setup(data_dir, args.workspaces)
        items = make_items(args.events, workspaces)
        rate, cpu_us = await burst(app, data_dir, items, args.batch)
        print(
            f"burst:  {args.events} events (+ receipts) written at {rate:,.0f} events/s"
            f" (batch {args.batch}); drainer CPU in the gateway process {cpu_us:.1f} µs/event"
        )
        steady_items = make_items(args.rate * args.seconds, workspaces)
        result = await steady(app, data_dir, steady_items, args.rate, args.batch)
        print(f"steady: {args.rate} events/s offered for {args.seconds} s → {result}")
        assert result["written"] == result["offered"], "events were lost"
    finally:
        pid_file = data_dir / "pg" / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), 2)
            await asyncio.sleep(1)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--workspaces", type=int, default=20)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
