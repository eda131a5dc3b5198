"""One workspace's share of cross-workspace maintenance (a rollup of one hour, a
prune), isolated from the others'.

Each share runs in its own transaction, in service mode, under its own statement
timeout (`RECOVEA_MAINTENANCE_TIMEOUT_S`) instead of the connection's 5 s: a
workspace with a heavy hour gets the time it needs, and a share that fails or
times out is rolled back alone. The loops over workspaces record such a failure
as a `Failure` and go on to the next workspace; only a lost connection ends the
loop (`connection_lost`), since every later share would fail the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from recovea_proxy.store.service import service_mode


@dataclass(frozen=True)
class Failure:
    """One workspace's share that did not go through (its work is retried next time)."""

    workspace: uuid.UUID
    error: str  # the exception's type name: never its message, which may quote data
    hour: datetime | None = None

    def as_json(self) -> dict[str, str]:
        """The failure as the CLI prints it."""
        out = {"workspace": str(self.workspace), "error": self.error}
        if self.hour is not None:
            out["hour"] = self.hour.isoformat()
        return out


@asynccontextmanager
async def maintenance_transaction(
    conn: asyncpg.Connection, timeout_s: float
) -> AsyncIterator[None]:
    """A transaction in service mode whose statements may each run `timeout_s`."""
    async with conn.transaction():
        await service_mode(conn)
        await conn.execute(
            "SELECT set_config('statement_timeout', $1, true)",
            str(max(1, round(timeout_s * 1000))),
        )
        yield


def connection_lost(conn: asyncpg.Connection) -> bool:
    """Whether a failed share took the connection with it (the loop cannot go on)."""
    return bool(conn.is_closed())
