"""Under `make mutate` only: one embedded Postgres for every mutant's test run.

mutmut runs the selected tests once per mutant, each time as a fresh pytest session
in a process forked from mutmut's own. The `postgres` session fixture would then
start, migrate and stop a server for every mutant (seconds each, hundreds of
mutants). Loaded with `-p tests.mutmut_postgres` from `[tool.mutmut]
pytest_add_cli_args`, this plugin answers that fixture with one server: started by
the first session in mutmut's own process (the stats run), inherited by every
forked run, and stopped when mutmut's process exits. The server is the same real
embedded Postgres the fixture would start; only its lifetime changes. The session's
`workdir` (where `db_env` keeps the master key) is shared the same way, so what one
run stored under that key (the receipt signing key, say) the next can read.

A run that takes too long is stopped by mutmut with SIGXCPU, which would leave the
servers of its `own_postgres` fixtures running: on that signal they are stopped
first, and the run ends as a timeout.

The plain test suite never loads this module.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tests.support import Postgres, short_tmpdir

_server: Postgres | None = None
_workdir: Path | None = None
#: the servers of this run's own_postgres fixtures, for a timed-out run to stop
_own: list[Postgres] = []
#: the exit status mutmut reads as a timeout (128 + SIGXCPU)
_TIMED_OUT = 152


def _stop(server: Postgres, workdir: Path, owner: int) -> None:
    """At exit of the process that started the server (never in a forked run)."""
    if os.getpid() != owner:
        return
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)


def shared() -> tuple[Postgres, Path]:
    """The one server and work directory of this mutation run, made on first use."""
    global _server, _workdir
    if _server is None or _workdir is None:
        _server, _workdir = Postgres(), short_tmpdir()
        atexit.register(_stop, _server, _workdir, os.getpid())
    return _server, _workdir


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    """Hand the shared server to `postgres` and the shared directory to `workdir`;
    every other fixture is set up as usual."""
    if fixturedef.argname not in ("postgres", "workdir"):
        return None
    server, workdir = shared()
    value = server if fixturedef.argname == "postgres" else workdir
    fixturedef.cached_result = (value, fixturedef.cache_key(request), None)  # type: ignore[arg-type]
    return value


@pytest.hookimpl(wrapper=True, specname="pytest_fixture_setup")
def remember_own_postgres(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """Remember each `own_postgres` server, so that a timed-out run can stop it."""
    value = yield
    if fixturedef.argname == "own_postgres" and isinstance(value, Postgres):
        _own.append(value)
    return value


def _timed_out(_signum: int, _frame: FrameType | None) -> None:
    """SIGXCPU: stop this run's own servers, then end it as mutmut's timeout."""
    for server in _own:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
    os._exit(_TIMED_OUT)


def pytest_configure(config: pytest.Config) -> None:
    """Every run (mutmut forks one per mutant) stops its own servers when timed out."""
    signal.signal(signal.SIGXCPU, _timed_out)
