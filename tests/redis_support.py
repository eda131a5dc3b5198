"""A real `redis-server` for the tests (started on a free port, stopped by its pid, and
started again on the same port), and a TCP listener that never answers (a Redis that
hangs)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

import redis

from tests.support import free_port, wait_until


class RedisServer:
    """One `redis-server` process with no persistence, on 127.0.0.1."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (.ci/run installs it)"
        self._binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def client(self) -> redis.Redis:
        """A plain client, for the tests' own reads and writes."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        """Start it (again) on its port; return when it answers PING."""
        self.process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10, f"redis-server on {self.port}")

    def _answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None, "redis-server exited"
        with self.client() as client:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

    def kill(self) -> None:
        """Kill it by its pid (no shutdown courtesy) and wait until it is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


class SilentServer:
    """A TCP listener that takes connections (the kernel completes them) and never
    answers a byte."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self.port = int(self._socket.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self._socket.close()
