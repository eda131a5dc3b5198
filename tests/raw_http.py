"""HTTP/1.1 over a plain socket, byte for byte: the tests of the connection bounds need
to choose every header a client sends and to see exactly when the server closes."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

import orjson

from tests.conftest import FAKE_OPENAI_KEY

CHAT = orjson.dumps(
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
)


@dataclass(frozen=True)
class RawResponse:
    """A response as read off the socket."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


def connect(port: int, timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(
    target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"", method: bytes = b"POST"
) -> bytes:
    """The bytes of one request with exactly these headers (nothing added)."""
    lines = [method + b" " + target + b" HTTP/1.1\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join([*lines, b"\r\n", body])


def chat_headers(port: int, body: bytes = CHAT) -> list[tuple[bytes, bytes]]:
    """The headers a passthrough chat request needs."""
    return [
        (b"host", f"127.0.0.1:{port}".encode()),
        (b"authorization", f"Bearer {FAKE_OPENAI_KEY}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]


def padded(
    headers: list[tuple[bytes, bytes]], target: bytes, count: int, size: int
) -> list[tuple[bytes, bytes]]:
    """`headers` plus `x-fill-N` headers, `count` in all, whose names and values and the
    target add up to exactly `size` bytes."""
    fillers = count - len(headers)
    used = len(target) + sum(len(n) + len(v) for n, v in headers)
    names = [b"x-fill-%03d" % i for i in range(fillers)]
    room = size - used - sum(len(n) for n in names)
    assert fillers > 0 and room >= fillers, "cannot pad to that size"
    each, extra = divmod(room, fillers)
    values = [b"v" * (each + (1 if i < extra else 0)) for i in range(fillers)]
    result = headers + list(zip(names, values, strict=True))
    assert len(result) == count
    assert len(target) + sum(len(n) + len(v) for n, v in result) == size
    return result


def read_response(sock: socket.socket) -> RawResponse:
    """One response (content-length or close-delimited), leaving the socket open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get(b"content-length")
    if length is None:
        rest += read_until_closed(sock)
    else:
        while len(rest) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return RawResponse(int(status_line.split()[1]), headers, rest)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset after its answer counts as closed)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def closed_within(sock: socket.socket, deadline_s: float) -> float | None:
    """Seconds until the server closed the connection (EOF or reset), or None if it is
    still open at the deadline. Bytes the server sends first are read and dropped."""
    start = time.monotonic()
    end = start + deadline_s
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            continue
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def exchange(port: int, data: bytes, timeout_s: float = 10.0) -> RawResponse:
    """Send `data` on a new connection and read one response."""
    with connect(port, timeout_s) as sock:
        sock.sendall(data)
        return read_response(sock)
