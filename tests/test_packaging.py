"""The built wheel carries everything `recovea` needs at run time (the SQL migrations
are package data: a wheel without them would migrate nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import orjson

from recovea_proxy.store.migrate import migration_files
from tests.support import Postgres, short_tmpdir

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_runs_migrations_from_its_own_files() -> None:
    """`recovea migrate` from the installed wheel (not the source tree) applies 0001."""
    build = short_tmpdir()
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(build),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(build.glob("recovea_proxy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "recovea_proxy/store/sql/0001_tenancy.sql" in names
    page = sorted(p.name for p in (ROOT / "recovea_proxy" / "ui" / "static").iterdir())
    assert {f"recovea_proxy/ui/static/{name}" for name in page} <= set(names)
    target = build / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    server = Postgres()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "recovea_proxy", "migrate", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=build,
            env={**os.environ, "PYTHONPATH": str(target), "RECOVEA_DATABASE_URL": server.url},
        )
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["applied"] == [p.name for p in migration_files()]
        assert "recovea_proxy/store/sql/0002_ledger.sql" in names
        served = subprocess.run(
            [sys.executable, "-c", "from recovea_proxy.ui import load_static as s; print(*s())"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=build,
            env={**os.environ, "PYTHONPATH": str(target)},
        )
        assert served.returncode == 0, served.stderr
        assert sorted(served.stdout.split()) == page  # the usage page, from the wheel
    finally:
        server.stop()
