"""HTTP/1.1 over a plain socket, byte for byte as written: for requests that client
libraries would normalize (dot segments, odd escapes) or refuse to send."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import orjson


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


def exchange(port: int, request: bytes, timeout_s: float = 15) -> RawResponse:
    """Send `request` as is on a new connection; read one response (the gateway closes
    or sends a content-length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before a response: {data!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "-1"))
        while length >= 0 and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return RawResponse(status, headers, body)


def request_bytes(
    method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    """A request with `target` exactly as given."""
    lines = [f"{method} {target} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One connection kept open: bytes sent as written, and the answers read one after
    another — interim `1xx` answers, pipelined responses, bodies framed by
    content-length, by chunks (decoded) or by the server closing."""

    def __init__(self, port: int, timeout_s: float = 15) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, *, head_only: bool = False) -> RawResponse:
        """The next response (`head_only`: the answer to a HEAD, which has no body)."""
        head = self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status < 200 or status in (204, 304):
            return RawResponse(status, headers, b"")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return RawResponse(status, headers, self._chunks())
        if "content-length" in headers:
            return RawResponse(status, headers, self._take(int(headers["content-length"])))
        return RawResponse(status, headers, self.rest())

    def responses(self) -> list[RawResponse]:
        """Every response until the server closes (none of them to a HEAD)."""
        answers = []
        while self._buffer or self._more():
            answers.append(self.response())
        return answers

    def rest(self) -> bytes:
        """Everything the server still sends until it closes (a reset counts as closed)."""
        while self._more():
            pass
        data, self._buffer = self._buffer, b""
        return data

    def _more(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self._buffer += chunk
        return bool(chunk)

    def _until(self, end: bytes) -> bytes:
        while (at := self._buffer.find(end)) < 0:
            if not self._more():
                raise AssertionError(f"closed before {end!r}: {self._buffer[:300]!r}")
        data, self._buffer = self._buffer[:at], self._buffer[at + len(end) :]
        return data

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._more():
                raise AssertionError(f"closed {size - len(self._buffer)} bytes short")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _chunks(self) -> bytes:
        body = b""
        while size := int(self._until(b"\r\n").split(b";")[0], 16):
            body += self._take(size)
            self._take(2)
        while self._until(b"\r\n"):
            pass  # trailer fields, up to the empty line
        return body


def chat_head(key: str, *extra: str, host: str = "127.0.0.1") -> bytes:
    """A chat request's request line and headers, unterminated: the caller adds more
    headers, the framing and the body."""
    lines = ["POST /v1/chat/completions HTTP/1.1", f"host: {host}", f"authorization: Bearer {key}"]
    lines += ["content-type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def framed(head: bytes, body: bytes) -> bytes:
    """`head` ended with a content-length for `body`, then `body`."""
    return head + b"content-length: %d\r\n\r\n" % len(body) + body
