"""The embedded Postgres (the `pgserver` package) under the data directory.

Started by the first process that asks (`recovea serve` or an admin command) and
joined by the others (`cleanup_mode=None`: pgserver itself never stops it), so the
gateway and the CLI share one server. Clients connect over its unix socket.

A gateway that stops calls `release`: the server is stopped (fast shutdown) when no
other process uses it — none of the other processes that started or joined it
(pgserver's list of their pids) is alive, and no other client is connected. An
admin command leaves it running; so does a gateway killed outright (then
`kill -INT $(head -1 <data dir>/pg/postmaster.pid)` stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import asyncpg
import orjson
import structlog

PG_SUBDIR = "pg"
#: how long `release` waits for the server to finish its fast shutdown
_STOP_WAIT_S = 15.0


def embedded_url(data_dir: Path) -> str:
    """Start (or join) the embedded server in `<data_dir>/pg` and return its superuser URL."""
    pg_dir = (data_dir / PG_SUBDIR).resolve()
    pg_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if len(str(pg_dir)) > 90:
        raise RuntimeError(
            f"RECOVEA_DATA_DIR is too deep for Postgres's unix socket ({pg_dir}); "
            "use a shorter path"
        )
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.resolve()))
    with warnings.catch_warnings():
        # pgserver's platformdirs warns about XDG_RUNTIME_DIR on import in containers.
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(str(pg_dir), cleanup_mode=None)  # type: ignore[attr-defined]
        # get_server hands back a cached handle within one process: make sure the
        # server behind it is still (or again) running.
        server.ensure_postgres_running()
    return _superuser_url(pg_dir)


def _superuser_url(pg_dir: Path) -> str:
    # pgserver's URI puts the socket directory in the query string unescaped; a '+'
    # or '&' in the path would change its meaning, so build it escaped.
    return f"postgresql://postgres:@/postgres?host={quote(str(pg_dir), safe='/')}"


def postmaster_pid(data_dir: Path) -> int | None:
    """The embedded server's postmaster pid, if it is running."""
    pid_file = data_dir / PG_SUBDIR / "postmaster.pid"
    try:
        return int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


async def release(data_dir: Path) -> bool:
    """Stop the embedded server in `<data_dir>/pg` unless another process uses it;
    whether it was stopped. Call it once this process has closed its connections."""
    pid = postmaster_pid(data_dir)
    if pid is None or not _alive(pid):
        return False
    pg_dir = (data_dir / PG_SUBDIR).resolve()
    log = structlog.get_logger("recovea.store")
    clients = await _other_clients(_superuser_url(pg_dir))
    if clients:
        log.info("embedded_postgres_left_running", path=str(pg_dir), other_clients=clients)
        return False
    stopped = await asyncio.to_thread(_stop_unless_joined, pg_dir, pid)
    if stopped:
        log.info("embedded_postgres_stopped", path=str(pg_dir))
    else:
        log.info("embedded_postgres_left_running", path=str(pg_dir), reason="in use")
    return stopped


async def _other_clients(url: str) -> int:
    """Client connections to the server besides this check's own (an unreachable
    server counts as in use: leave it alone)."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return 1
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return int(count)


def _stop_unless_joined(pg_dir: Path, pid: int) -> bool:
    """Under pgserver's inter-process lock (so no process joins meanwhile): stop the
    server unless another live process is on pgserver's list of its users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import PostgresServer

    with PostgresServer._lock:
        if _other_users(pg_dir):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + _STOP_WAIT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    return not _alive(pid)


def _other_users(pg_dir: Path) -> list[int]:
    """The live processes besides this one that started or joined the server (the
    pids pgserver keeps in `.handle_pids.json`; a process that died is skipped)."""
    try:
        pids = orjson.loads((pg_dir / ".handle_pids.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    return [p for p in pids if isinstance(p, int) and p != os.getpid() and _alive(p)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
