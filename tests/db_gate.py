"""A unix-socket gate in front of the session's embedded Postgres, for tests that
take the database away from code running in this process: shut (unreachable, open
connections cut), cut (connections dropped, new ones accepted) or stalled (every
byte held, nothing closed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

from tests.support import Postgres, short_tmpdir

SOCKET = ".s.PGSQL.5432"


class Gate:
    """A unix-socket proxy in front of the embedded Postgres. Open, connections pass
    through to the server; shut, new connections are refused and open ones cut; `cut`
    drops the open connections and keeps accepting new ones; `stall` holds every byte
    (the database stops answering without closing anything) until `resume`."""

    def __init__(self, server_dir: Path) -> None:
        self._target = str(server_dir / SOCKET)
        self.dir = short_tmpdir()
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()
        #: one task per connection passing through; `shut` ends them all
        self._passing: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        #: chunks that reached the gate while it stalled (a write is in progress)
        self.held = 0

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def url(self, app_url: str) -> str:
        """`app_url` pointed at the gate instead of the server."""
        base = app_url.split("?", 1)[0]
        return f"{base}?host={quote(str(self.dir), safe='/')}"

    async def open(self) -> None:
        self._server = await asyncio.start_unix_server(self._pass, path=self.dir / SOCKET)

    async def shut(self) -> None:
        """Stop accepting and cut every connection; return once each connection's task
        has ended (a loop closed after this leaves no stream of the gate open)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        (self.dir / SOCKET).unlink(missing_ok=True)
        self.cut()
        for task in self._passing:
            task.cancel()
        await asyncio.gather(*self._passing, return_exceptions=True)

    def cut(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _pass(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._passing.add(task)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self._target)
            self._open.update((writer, up_writer))
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except OSError:
            pass
        finally:
            # also when `shut` cancels a connection still reaching the server
            writer.transport.abort()
            self._passing.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self._flowing.is_set():
                    self.held += 1
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


@contextlib.asynccontextmanager
async def gate_for(postgres: Postgres) -> AsyncIterator[Gate]:
    gate = Gate(Path(postgres.data_dir) / "pg")
    await gate.open()
    try:
        yield gate
    finally:
        await gate.shut()
