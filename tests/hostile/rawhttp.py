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
