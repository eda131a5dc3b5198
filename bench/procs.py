"""The bench's child processes: free ports, starting in their own process group,
polling for readiness with a deadline, and always stopping them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

POLL_S = 0.05


class NotReady(RuntimeError):
    """A child process exited, or did not answer before its deadline."""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(argv: list[str], cores: str | None) -> list[str]:
    """`argv` under `taskset -c cores`, when `cores` is set and taskset exists."""
    if cores is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", cores, *argv]


def pin_tree(pids: list[int], cores: str | None) -> None:
    """Move running processes (e.g. a database and its backends) to `cores`; children
    they fork later inherit the setting."""
    if cores is None:
        return
    first, _, last = cores.partition("-")
    allowed = set(range(int(first), int(last or first) + 1))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, allowed)


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` in its own process group, output to `log`; kill the group on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def wait_ready(
    check: Callable[[], bool], process: subprocess.Popen[bytes], what: str, deadline_s: float
) -> None:
    """Poll `check` until it holds; NotReady if `process` exits or the deadline passes."""
    end = time.monotonic() + deadline_s
    while not check():
        if process.poll() is not None:
            raise NotReady(f"{what}: exited with status {process.returncode}")
        if time.monotonic() > end:
            raise NotReady(f"{what}: not ready within {deadline_s:.0f} s")
        time.sleep(POLL_S)


def http_ok(url: str) -> Callable[[], bool]:
    """A check: GET `url` answers 200."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    return check


def tcp_open(port: int) -> Callable[[], bool]:
    """A check: 127.0.0.1:`port` accepts a connection."""

    def check() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    return check
