"""Runs the app under uvicorn (uvloop + httptools), one or several worker processes.

Connections are served by `http_protocol.GatewayHttpProtocol` (uvicorn's httptools
protocol with header, header-time and connection bounds). uvicorn's own
`limit_concurrency` is not used: it answers 503 in plain text, not in the caller's
provider's shape, and counts connections only once a request's headers are in; the
protocol closes a connection over `RECOVEA_MAX_CONNECTIONS` before reading from it,
and the proxy bounds the requests in flight itself.

Shutdown order on SIGTERM (uvicorn's): stop listening → let in-flight requests and
streams finish within RECOVEA_SHUTDOWN_GRACE_S, then cancel those still running →
lifespan exit closes resources.
"""

from __future__ import annotations

from typing import cast

import uvicorn

from recovea_proxy.config import Settings
from recovea_proxy.http_protocol import http_protocol


def serve(settings: Settings, workers: int = 1) -> None:
    """Serve the gateway until SIGTERM/SIGINT. Settings reach workers through the env,
    and the connection bounds through uvicorn's config (pickled for each worker)."""
    uvicorn.run(
        "recovea_proxy.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers if workers > 1 else None,
        loop="uvloop",
        http=http_protocol(settings),
        # WebSockets (Realtime): a message over the bound closes the session with 1009
        ws="websockets-sansio",
        ws_max_size=settings.ws_max_frame_bytes,
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_config=None,
        timeout_keep_alive=75,
        # uvicorn annotates an int but only uses it as asyncio.timeout(delay), which
        # takes seconds as a float; 0 cancels in-flight requests at once.
        timeout_graceful_shutdown=cast(int, settings.shutdown_grace_s),
    )
