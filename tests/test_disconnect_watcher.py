"""A stream's task is cancelled as soon as its client goes away: on the gateway's own
HTTP server the lost connection says so itself (`GatewayCycle.lost`, no watching task);
under any other ASGI server a task reads `receive` until `http.disconnect`. Real
sockets and a real uvicorn server with the gateway's protocol."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from recovea_proxy.disconnect import DisconnectWatcher
from recovea_proxy.http_cycle import GatewayCycle
from recovea_proxy.http_protocol import ConnectionLimits, GatewayHttpProtocol
from recovea_proxy.record import RequestRecord

_LIMITS = ConnectionLimits(
    max_header_count=100,
    max_header_bytes=32 * 1024,
    header_timeout_s=10.0,
    max_connections=100,
    body_idle_timeout_s=10.0,
)
_REQUEST = b"GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n"
_FIRST_EVENT = b"data: first\n\n"


class StreamingApp:
    """An ASGI app whose every response is a stream watched by a `DisconnectWatcher`:
    it sends one event, then waits for `finish`, which only the test sets. Once set,
    the stream ends as the pipe ends one: the watch stops, and the last bytes are
    sent after a wait (here for the client's `http.disconnect`)."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.receivers: list[Any] = []
        self.finish = asyncio.Event()
        #: set when the watch has stopped, when a stream's task was cancelled, when
        #: the app returned
        self.stopped = asyncio.Event()
        self.cut = asyncio.Event()
        self.done = asyncio.Event()
        self.after_stop: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        record = _record()
        self.records.append(record)
        self.receivers.append(receive)
        assert (await receive())["type"] == "http.request"  # the body, read first
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        watcher = DisconnectWatcher(receive, record)
        try:
            await send({"type": "http.response.body", "body": _FIRST_EVENT, "more_body": True})
            await self.finish.wait()
        except asyncio.CancelledError:
            self.cut.set()
            raise
        finally:
            watcher.stop()
        self.stopped.set()
        self.after_stop.append((await receive())["type"])
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.done.set()


@contextlib.asynccontextmanager
async def serving(app: StreamingApp) -> AsyncIterator[int]:
    """The app on a real uvicorn server with the gateway's HTTP protocol; its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = uvicorn.Config(
        app,
        http=functools.partial(GatewayHttpProtocol, limits=_LIMITS),  # type: ignore[arg-type]
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _first_event(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_REQUEST)
    await asyncio.wait_for(reader.readuntil(_FIRST_EVENT.rstrip(b"\n")), 10)
    return reader, writer


def _record() -> RequestRecord:
    return RequestRecord("r" * 32, "t" * 32, 0, 0)


async def _watched_forever(receive: Any, record: RequestRecord, watching: asyncio.Event) -> None:
    """A stream that never ends by itself, watched from its first step (`watching` set
    once the watch is made)."""
    watcher = DisconnectWatcher(receive, record)
    watching.set()
    try:
        await asyncio.Event().wait()
    finally:
        watcher.stop()


async def test_the_gateway_server_cuts_a_stream_whose_client_left() -> None:
    """The client closes its socket after the first event: the stream's task is
    cancelled and its record says `client_gone`. The server hands the app the cycle's
    own `receive` (what lets the connection tell the watcher, with no task)."""
    app = StreamingApp()
    async with serving(app) as port:
        _, writer = await _first_event(port)
        writer.close()
        await asyncio.wait_for(app.cut.wait(), 10)
    assert app.records[0].client_gone is True
    assert isinstance(getattr(app.receivers[0], "__self__", None), GatewayCycle)


async def test_a_stream_that_ended_is_not_cut_when_its_client_leaves() -> None:
    """The stream's watch stops before the client leaves (the last bytes not yet sent,
    as a receipt is sent after the stream): the connection closing then cancels
    nothing and marks nothing; the app reads `http.disconnect` and ends."""
    app = StreamingApp()
    async with serving(app) as port:
        _, writer = await _first_event(port)
        app.finish.set()
        await asyncio.wait_for(app.stopped.wait(), 10)
        writer.close()
        await asyncio.wait_for(app.done.wait(), 10)
    assert not app.cut.is_set()
    assert app.records[0].client_gone is False
    assert app.after_stop == ["http.disconnect"]


async def test_a_client_gone_before_the_stream_began_cuts_it_at_its_first_wait() -> None:
    """A cycle already marked disconnected when the watcher is made: the streaming task
    is cancelled at its next wait, without any callback."""
    record = _record()
    cycle = GatewayCycle.__new__(GatewayCycle)
    cycle.disconnected = True

    with pytest.raises(asyncio.CancelledError):
        streaming = _watched_forever(cycle.receive, record, asyncio.Event())
        await asyncio.wait_for(asyncio.create_task(streaming), 10)
    assert record.client_gone is True
    assert cycle.on_disconnect is None


async def test_under_another_server_a_task_reads_receive_for_the_disconnect() -> None:
    """`receive` of a server that is not the gateway's: the watcher reads it (after its
    start-up delay) and cancels the stream at `http.disconnect`."""
    record = _record()
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    watching = asyncio.Event()
    task = asyncio.create_task(_watched_forever(receive, record, watching))
    await watching.wait()
    assert not record.client_gone
    left.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert record.client_gone is True


async def test_under_another_server_a_stream_that_ends_stops_its_watch() -> None:
    """The stream ends before its client leaves: nothing is cancelled, and the client
    leaving afterwards marks nothing."""
    record = _record()
    left = asyncio.Event()
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        await left.wait()
        return {"type": "http.disconnect"}

    async def streaming() -> str:
        watcher = DisconnectWatcher(receive, record)
        watcher.stop()
        return "done"

    assert await asyncio.create_task(streaming()) == "done"
    left.set()
    assert record.client_gone is False
    assert reads == 0
