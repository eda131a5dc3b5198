"""The embedded Postgres (the `pgserver` package) under the data directory.

Started by the first process that asks (`recovea serve` or an admin command) and
joined by the others; it outlives them (`cleanup_mode=None`), so the gateway and
the CLI share one server. Clients connect over its unix socket.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import quote

PG_SUBDIR = "pg"


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
