"""The first five minutes, as a new user meets them: `recovea serve` on the embedded
defaults says in a few lines where it listens, passthrough, where the ledger lives,
the upstreams, the usage page and /metrics, without the embedded Postgres's own
chatter; stopping it stops the embedded Postgres it used, unless another process
still uses it.

Each test has its own data dir (so its own embedded Postgres): the session's
Postgres, started by a fixture, is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import upstream_env
from tests.support import Gateway, MockServer, short_tmpdir, wait_until


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir of the test's own; its embedded Postgres is stopped afterwards if a
    test left it running."""
    from recovea_proxy.store.embedded import postmaster_pid

    path = short_tmpdir()
    yield path
    pid = postmaster_pid(path)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGINT)
        wait_until(lambda: not _alive(pid), 30, "the embedded postgres to stop")
    shutil.rmtree(path, ignore_errors=True)


def _embedded_env(mock: MockServer, data_dir: Path) -> dict[str, str]:
    return {
        **upstream_env(mock),
        # empty: the embedded default, whatever the outer environment holds
        "RECOVEA_DATABASE_URL": "",
        "RECOVEA_DATA_DIR": str(data_dir),
        "RECOVEA_MASTER_KEY_FILE": str(data_dir / "master.key"),
        "RECOVEA_LOG_FORMAT": "console",
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_up_says_what_matters_in_a_few_lines(
    mock: MockServer, data_dir: Path, workdir: Path
) -> None:
    """The first lines of `recovea serve` are the banner, and nothing of pgserver's
    start-up (`Running commandline`, `Now asserting server is running`) is printed."""
    gateway = Gateway(_embedded_env(mock, data_dir), workdir)
    try:
        base = gateway.url
        expected = [
            f"Recovea gateway on {base} (Ctrl-C stops it)",
            "  passthrough  on: requests with a provider's own key are forwarded and metered",
            f"  ledger       embedded Postgres in {(data_dir / 'pg').resolve()}"
            " (stopped with the gateway when no other process uses it)",
            f"  upstreams    openai {mock.url}, anthropic {mock.url}, openrouter {mock.url}/api",
            f"  usage page   {base}/ui/",
            f"  metrics      {base}/metrics",
        ]
        lines = wait_until(
            lambda: (text := gateway.log_text().splitlines())[5:] and text,
            10,
            "the start-up lines",
        )
        assert expected == lines[:6]
        text = gateway.log_text()
        for chatter in ("Running commandline", "Now asserting", "pg_ctl", "Uvicorn running"):
            assert chatter not in text
    finally:
        gateway.stop(signal.SIGINT)


def test_stopping_the_gateway_stops_the_embedded_postgres(
    mock: MockServer, data_dir: Path, workdir: Path
) -> None:
    """Ctrl-C on the only process using the embedded Postgres stops it too: its
    postmaster is gone and the gateway says so."""
    from recovea_proxy.store.embedded import postmaster_pid

    gateway = Gateway(_embedded_env(mock, data_dir), workdir)
    pid = postmaster_pid(data_dir)
    assert pid is not None and _alive(pid)
    gateway.stop(signal.SIGINT)
    assert not _alive(pid)
    assert postmaster_pid(data_dir) is None
    assert "embedded_postgres_stopped" in gateway.log_text()


def test_the_embedded_postgres_stays_while_another_process_uses_it(
    mock: MockServer, data_dir: Path, workdir: Path
) -> None:
    """A second process that joined the server (as an admin command does) keeps it
    running when the gateway stops."""
    from recovea_proxy.store.embedded import postmaster_pid

    gateway = Gateway(_embedded_env(mock, data_dir), workdir)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            " from recovea_proxy.store.embedded import embedded_url;"
            " embedded_url(Path(sys.argv[1])); print('joined', flush=True); time.sleep(60)",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "joined"
        pid = postmaster_pid(data_dir)
        assert pid is not None
        gateway.stop(signal.SIGINT)
        assert _alive(pid)
        assert "embedded_postgres_left_running" in gateway.log_text()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
