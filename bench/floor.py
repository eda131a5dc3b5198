"""The floor: the leanest correct pass-through proxy on the gateway's own stack.

Raw ASGI under uvicorn (uvloop + httptools), one shared aiohttp session, no
features: forward the request, stream the response back chunk by chunk. The
gateway's cost is reported as a ratio to this one.

    python -m bench.floor --port 8100 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import aiohttp
import uvicorn

_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
        b"content-length",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)


class Floor:
    """ASGI app: lifespan opens the session; HTTP requests are proxied to `upstream`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self.session is not None
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP
        ]
        url = self.upstream + scope["path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        async with self.session.request(
            scope["method"], url, headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            out = [(k, v) for k, v in upstream.raw_headers if k.lower() not in _HOP]
            if upstream.content_length is not None:
                out.append((b"content-length", str(upstream.content_length).encode()))
            await send({"type": "http.response.start", "status": upstream.status, "headers": out})
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1000),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600),
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent", "Accept", "Content-Type"),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--upstream", default=os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:9000")
    )
    args = parser.parse_args()
    uvicorn.run(
        Floor(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        server_header=False,
        date_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
