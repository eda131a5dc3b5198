"""Applies the numbered SQL files in `sql/` that the database has not seen yet.

Each file runs in its own transaction and is recorded in `public.recovea_migrations`.
A session advisory lock makes concurrent runs (several replicas starting at once)
take turns: the second finds the work done.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

SQL_DIR = Path(__file__).parent / "sql"
_LOCK_ID = 0x5245_434F_5645_4131  # "RECOVEA1"


def migration_files() -> list[Path]:
    """Every migration, in the order it applies."""
    return sorted(SQL_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply what is missing; return the names applied by this call."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS public.recovea_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["name"] for row in await conn.fetch("SELECT name FROM recovea_migrations")}
        for path in migration_files():
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO public.recovea_migrations (name) VALUES ($1)", path.name
                )
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
