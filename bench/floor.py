"""The floor: the leanest correct pass-through proxy on the gateway's own stack.

A raw ASGI callable (no framework, no features) under uvicorn with uvloop and
httptools; one aiohttp session opened and closed by the ASGI lifespan. Each
request is forwarded as it came (method, path and query, end-to-end headers,
body) and the response is streamed back chunk by chunk as it arrives. An
upstream that cannot be reached becomes a 502 if nothing was sent yet; a failure
mid-stream drops the connection so the client sees a truncated response, not a
clean end. The gateway's cost is reported as a ratio to this one's, so its
client and server settings match the gateway's (`recovea_proxy/upstream.py`,
`recovea_proxy/server.py`), and it tunes the garbage collector the same way
(`recovea_proxy/gc_tuning.py`): anything the floor does in excess flatters the ratio.

    python -m bench.floor --port 8100 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn
from yarl import URL

from recovea_proxy.gc_tuning import settle_after_startup

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 §7.6.1 hop-by-hop fields, plus the ones the client library recomputes.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
_BAD_GATEWAY = b'{"error":{"message":"upstream unreachable","type":"bad_gateway"}}'


def _end_to_end(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` without hop-by-hop fields, including those named in `Connection`."""
    drop = _HOP
    for name, value in headers:
        if name.lower() == b"connection":
            drop = drop | {t.strip().lower() for t in value.split(b",")}
    return [(k, v) for k, v in headers if k.lower() not in drop]


class Floor:
    """ASGI app: the lifespan owns the client session; HTTP requests go to `upstream`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._proxy(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.session is not None, "lifespan did not run"
        parts: list[bytes] = []
        more = True
        while more:
            message = await receive()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(parts)
        path = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            path += b"?" + scope["query_string"]
        # Forwarded as received: no decoding, no re-quoting.
        url = URL(self.upstream + path.decode("latin-1"), encoded=True)
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in _end_to_end(scope["headers"])
        ]
        started = False
        try:
            async with self.session.request(
                scope["method"], url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                out = _end_to_end(list(upstream.raw_headers))
                if upstream.content_length is not None:
                    out.append((b"content-length", str(upstream.content_length).encode()))
                await send(
                    {"type": "http.response.start", "status": upstream.status, "headers": out}
                )
                started = True
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError):
            if started:
                raise  # uvicorn drops the connection: a truncated stream, visibly
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_BAD_GATEWAY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _BAD_GATEWAY})
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = open_session()
                settle_after_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def open_session() -> aiohttp.ClientSession:
    """The floor's one client session, set up like the gateway's."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=2**16,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--upstream",
        default=os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:9000"),
        help="upstream base URL (env FLOOR_UPSTREAM)",
    )
    args = parser.parse_args()
    uvicorn.run(
        Floor(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_level="warning",
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
