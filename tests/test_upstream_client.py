"""The gateway's upstream calls (`UpstreamClient`): a request with its body in memory
takes lean steps on aiohttp's own objects instead of `ClientSession.request`. The
provider must not be able to tell: the same bytes reach it, the same response comes
back, and every failure raises what `ClientSession.request` raises (the gateway maps
those to its 502s). Real sockets: a raw TCP server that records the bytes it gets,
servers that refuse, hang up or never answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from yarl import URL

from recovea_proxy.config import Settings
from recovea_proxy.upstream import UpstreamClient, classify, open_session

_BODY = b'{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}]}'
_HEADERS = [
    ("content-type", "application/json"),
    ("authorization", "Bearer sk-test-upstream-client"),
    ("x-stainless-lang", "python"),
    ("x-stainless-lang", "twice"),
    ("content-length", str(len(_BODY))),
]
_ANSWER = b'{"id":"chatcmpl-1","object":"chat.completion"}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: req_1\r\n"
    b"set-cookie: a=1\r\ncontent-length: %d\r\n\r\n%s" % (len(_ANSWER), _ANSWER)
)
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Recorder:
    """A provider that records each request's bytes (head and body) and answers one
    fixed JSON response on a kept-alive connection (to a body of `hold`: a stream that
    never ends)."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if request.endswith(b"hold"):  # a stream that never ends
                    writer.write(_STREAM_HEAD + b"6\r\ndata: \r\n")
                    await writer.drain()
                    await reader.read()  # until the client hangs up
                    break
                writer.write(_RESPONSE)
                await writer.drain()


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[URL]:
    """A server running `handler` per connection; on exit every connection it still
    has is closed and its handler ended."""
    connections: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            connections.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield URL(f"http://127.0.0.1:{port}/v1/chat/completions")
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)


@contextlib.asynccontextmanager
async def client(**env: str) -> AsyncIterator[UpstreamClient]:
    session = open_session(Settings.from_env(env))
    try:
        yield UpstreamClient(session)
    finally:
        await session.close()


async def _answer(upstream: UpstreamClient, url: URL, method: str = "POST") -> tuple[Any, ...]:
    response = await upstream.request(method, url, list(_HEADERS), _BODY)
    try:
        body = await response.read()
    finally:
        response.release()
    return response.status, response.raw_headers, body


async def test_the_provider_gets_the_same_bytes_and_the_client_the_same_answer() -> None:
    recorder = Recorder()
    async with serving(recorder.handle) as url, client() as upstream:
        assert upstream.lean, "the installed aiohttp takes the lean steps (_LEAN_AIOHTTP)"
        lean = await _answer(upstream, url)
        second = await _answer(upstream, url)  # on the kept-alive connection
        full = await upstream.session.request(
            "POST", url, headers=list(_HEADERS), data=_BODY, allow_redirects=False
        )
        full_answer = (full.status, full.raw_headers, await full.read())
        full.release()
    assert len(recorder.requests) == 3
    assert recorder.requests[0] == recorder.requests[2]  # byte for byte, header order too
    assert recorder.requests[1] == recorder.requests[2]
    head = recorder.requests[0].split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"post /v1/chat/completions http/1.1\r\n")
    assert b"user-agent" not in head  # the session's skipped automatic headers
    assert head.count(b"x-stainless-lang") == 2
    assert lean == second == full_answer
    assert lean[0] == 200 and lean[2] == _ANSWER


async def test_a_refused_connection_raises_what_the_session_raises() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = URL(f"http://127.0.0.1:{held.getsockname()[1]}/v1/chat/completions")
        async with client() as upstream:
            lean, full = [await _failure(upstream, url, lean) for lean in (True, False)]
    assert type(lean) is type(full)
    assert isinstance(lean, aiohttp.ClientConnectorError)
    assert classify(lean) == "connect"


async def test_a_provider_that_hangs_up_before_answering() -> None:
    async def hang_up(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # then `serving` closes the connection

    async with serving(hang_up) as url, client() as upstream:
        lean, full = [await _failure(upstream, url, lean) for lean in (True, False)]
    assert type(lean) is type(full)
    assert isinstance(lean, aiohttp.ServerDisconnectedError)
    assert classify(lean) == "reset"


async def test_a_provider_that_never_answers_times_out_on_the_first_byte() -> None:
    async def never_answer(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await reader.read()  # held open, never written to, until the client hangs up

    async with (
        serving(never_answer) as url,
        client(RECOVEA_FIRST_BYTE_TIMEOUT_S="0.2") as upstream,
    ):
        lean, full = [await _failure(upstream, url, lean) for lean in (True, False)]
    assert type(lean) is type(full)
    assert isinstance(lean, aiohttp.ServerTimeoutError)
    assert classify(lean) == "timeout"


async def test_no_pooled_connection_free_in_time_is_a_connect_timeout() -> None:
    recorder = Recorder()
    env = {
        "RECOVEA_UPSTREAM_MAX_CONNECTIONS": "1",
        "RECOVEA_UPSTREAM_POOL_WAIT_S": "0",
        "RECOVEA_CONNECT_TIMEOUT_S": "0.2",
    }
    async with serving(recorder.handle) as url, client(**env) as upstream:
        # a stream in progress holds the one connection
        holding = await upstream.request("POST", url, _HEADERS[:-1], b"hold")
        lean, full = [await _failure(upstream, url, lean) for lean in (True, False)]
        holding.release()
        assert (await _answer(upstream, url))[0] == 200  # the connection is free again
    assert type(lean) is type(full)
    assert isinstance(lean, aiohttp.ConnectionTimeoutError)
    assert classify(lean) == "connect"


async def test_a_session_with_trace_hooks_takes_the_session_s_steps() -> None:
    """An operator's `TraceConfig` (or any option the lean steps leave out) is honoured:
    such a session's requests all go through `ClientSession.request`."""
    started: list[str] = []

    async def on_start(_: object, __: object, params: aiohttp.TraceRequestStartParams) -> None:
        started.append(params.method)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    recorder = Recorder()
    async with serving(recorder.handle) as url:
        session = aiohttp.ClientSession(trace_configs=[trace], auto_decompress=False)
        try:
            upstream = UpstreamClient(session)
            assert not upstream.lean
            status, _, body = await _answer(upstream, url)
        finally:
            await session.close()
    assert (status, body) == (200, _ANSWER)
    assert started == ["POST"]


async def _failure(upstream: UpstreamClient, url: URL, lean: bool) -> BaseException:
    """What a POST raises, by the lean steps or by the session."""
    try:
        if lean:
            response = await upstream.request("POST", url, list(_HEADERS), _BODY)
        else:
            response = await upstream.session.request(
                "POST", url, headers=list(_HEADERS), data=_BODY, allow_redirects=False
            )
    except Exception as exc:  # what is raised is what is compared
        return exc
    response.release()
    raise AssertionError("the request did not fail")


async def test_a_provider_s_oversized_header_is_refused_as_the_session_refuses_it() -> None:
    """The session's header limits bound what a provider may send: a header line past
    them fails the call (a client error the gateway answers 502), by either path."""

    async def oversized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(len(_BODY))
                writer.write(b"HTTP/1.1 200 OK\r\nx-huge: " + b"a" * 100_000 + b"\r\n\r\n")
                await writer.drain()

    async with serving(oversized) as url, client() as upstream:
        lean, full = [await _failure(upstream, url, lean) for lean in (True, False)]
    assert type(lean) is type(full)
    assert isinstance(lean, aiohttp.ClientError)
