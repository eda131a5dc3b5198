"""Runs the app under uvicorn (uvloop + httptools), one or several worker processes.

Shutdown order on SIGTERM (uvicorn's): stop listening → let in-flight requests and
streams finish within RECOVEA_SHUTDOWN_GRACE_S → lifespan exit closes resources.
"""

from __future__ import annotations

import uvicorn

from recovea_proxy.config import Settings


def serve(settings: Settings, workers: int = 1) -> None:
    """Serve the gateway until SIGTERM/SIGINT. Settings reach workers through the env."""
    uvicorn.run(
        "recovea_proxy.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers if workers > 1 else None,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_config=None,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )
