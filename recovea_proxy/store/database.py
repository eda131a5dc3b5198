"""Where the database is, and the connections to it.

- Owner connection (migrations, and the admin CLI's writes): `RECOVEA_DATABASE_URL`,
  or the embedded server's superuser when it is unset.
- App connections (the gateway's pool): the role `recovea_app`, which owns no table
  and cannot bypass row-level security. Embedded: the same server as
  `recovea_app` over the unix socket. External: `RECOVEA_APP_DATABASE_URL`
  (give `recovea_app` a password and put it there); unset, the owner URL's user is
  swapped for `recovea_app`.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from recovea_proxy.config import Settings
from recovea_proxy.store.embedded import embedded_url

APP_ROLE = "recovea_app"


def owner_url(settings: Settings) -> str:
    """The URL migrations and admin writes use."""
    return settings.database_url or embedded_url(settings.data_dir)


def app_url(settings: Settings) -> str:
    """The URL the gateway's pool uses (as the non-owning app role)."""
    if settings.app_database_url:
        return settings.app_database_url
    parts = urlsplit(owner_url(settings))
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{APP_ROLE}@{host}"))


async def connect(
    url: str, *, timeout_s: float = 10, command_timeout_s: float | None = None
) -> asyncpg.Connection:
    """One connection, with bounded connect and statement times (and, given
    `command_timeout_s`, a client-side bound on every query, for a server that stops
    answering without closing the connection)."""
    return await asyncpg.connect(
        url,
        timeout=timeout_s,
        command_timeout=command_timeout_s,
        server_settings={"statement_timeout": "5000", "TimeZone": "UTC"},
    )


async def open_pool(url: str, *, size: int = 10) -> asyncpg.Pool:
    """The process's pool: bounded size, connect and statement timeouts."""
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        timeout=5,
        command_timeout=5,
        max_inactive_connection_lifetime=300,
        server_settings={
            "statement_timeout": "5000",
            "application_name": "recovea",
            "TimeZone": "UTC",
        },
    )
    assert pool is not None
    return pool
