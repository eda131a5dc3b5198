"""Test helpers: real processes on real sockets, and reading the gateway's log lines.

Nothing here stands in for a part of the gateway: the gateway runs as its own
process (`python -m recovea_proxy serve`), the upstream is the project's mock
provider on a real port, and assertions read what a user could read (HTTP
responses, the log stream, /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from recovea_proxy.meter.verify import split_response
from recovea_proxy.mock_provider import MockDefaults, start_mock

STARTUP_DEADLINE_S = 20.0


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], deadline_s: float = 10.0, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


class MockServer:
    """The mock provider on its own event loop thread, listening on a real port."""

    def __init__(self, defaults: MockDefaults | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_mock("127.0.0.1", 0, defaults), self._loop)
        self._runner, self.port = future.result(timeout=10)
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        """Every request the mock received since the last clear (oldest first)."""
        result: list[dict[str, Any]] = httpx.get(f"{self.url}/_mock/requests").json()
        return result

    def calls_holding(self, text: str) -> int:
        """How many requests since the last clear had `text` in their body (a test's
        own prompt: how often the provider was called for it)."""
        return sum(1 for r in self.requests() if text in str(r.get("body")))

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_mock/requests")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _cancel_all() -> None:
    """Cancel what the mock still runs (hanging faults) so the loop closes cleanly."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Gateway:
    """One `recovea serve` process with its own port, data dir and log file."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gateway-{self.port}.log"
        GATEWAY_LOGS.append(self.log_path)
        full_env = {
            **os.environ,
            "RECOVEA_HOST": "127.0.0.1",
            "RECOVEA_PORT": str(self.port),
            "RECOVEA_LOG_FORMAT": "json",
            "RECOVEA_DATA_DIR": str(workdir / f"data-{self.port}"),
            "RECOVEA_PASSTHROUGH": "on",
            # rows readable soon after each request (production default: 1 s)
            "RECOVEA_METER_FLUSH_INTERVAL_S": "0.05",
            **env,
        }
        extra_args = full_env.pop("_args", "").split()
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recovea_proxy", "serve", *extra_args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready, STARTUP_DEADLINE_S, f"gateway on {self.url}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited early:\n{self.log_text()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                lines.append(orjson.loads(raw))
        return lines

    def record(self, request_id: str, deadline_s: float = 10.0) -> dict[str, Any]:
        """The request's log line (written just after its response ends)."""

        def find() -> dict[str, Any] | None:
            for line in self.log_lines():
                if line.get("event") == "request" and line.get("request_id") == request_id:
                    return line
            return None

        found: dict[str, Any] = wait_until(find, deadline_s, f"log line of {request_id}")
        return found

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics").text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        return int(self.process.returncode)


@contextlib.contextmanager
def running_gateway(env: dict[str, str], workdir: Path) -> Iterator[Gateway]:
    gateway = Gateway(env, workdir)
    try:
        yield gateway
    finally:
        gateway.stop()


def short_tmpdir() -> Path:
    """A short temporary directory (unix socket paths must stay under ~100 bytes)."""
    return Path(tempfile.mkdtemp(prefix="rcv-"))


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def grew(before: str, after: str, name: str, **labels: str) -> float:
    """How much one sample of Prometheus text output rose between two scrapes."""
    return metric_value(after, name, **labels) - metric_value(before, name, **labels)


class Postgres:
    """An embedded Postgres (pgserver) in its own short data directory."""

    def __init__(self) -> None:
        from recovea_proxy.store.embedded import embedded_url

        self.data_dir = short_tmpdir()
        self.url = embedded_url(self.data_dir)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster); waits until it is gone."""
        from recovea_proxy.store.embedded import postmaster_pid

        pid = postmaster_pid(self.data_dir)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        wait_until(lambda: not _alive(pid), 30, "postgres to stop")

    def start(self) -> None:
        from recovea_proxy.store.embedded import embedded_url

        self.url = embedded_url(self.data_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


#: every CLI run and gateway log of the session, for the leak check at its end
CLI_RUNS: list[tuple[tuple[str, ...], str | None, str]] = []
GATEWAY_LOGS: list[Path] = []


def cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `recovea ARGS` and return the finished process (output captured)."""
    done = subprocess.run(
        [sys.executable, "-m", "recovea_proxy", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    CLI_RUNS.append((args, stdin, done.stdout + done.stderr))
    return done


def cli_json(*args: str, env: dict[str, str], stdin: str | None = None) -> dict[str, Any]:
    """Run `recovea ARGS --json`; fail the test with its stderr if it does not succeed."""
    done = cli(*args, "--json", env=env, stdin=stdin)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def set_provider_key(env: dict[str, str], workspace: str, provider: str, secret: str) -> None:
    """Store a workspace's provider key with the CLI (key on stdin, as users do)."""
    cli_json(
        "provider-key",
        "set",
        "--workspace",
        workspace,
        "--provider",
        provider,
        env=env,
        stdin=secret + "\n",
    )


def without_receipt(body: bytes) -> bytes:
    """A streamed response's bytes before its closing receipt line (which must be there)."""
    content, token = split_response(body)
    assert token is not None, "the stream does not end with a receipt line"
    return content
