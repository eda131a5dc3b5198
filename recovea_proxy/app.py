"""Builds the ASGI app: Starlette for the gateway's own routes, a raw ASGI hot path
for the provider surfaces, and the lifespan that owns every resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from uvicorn.protocols.http import httptools_impl

from recovea_proxy import header_check
from recovea_proxy.admin.api import ADMIN_ROUTES
from recovea_proxy.admin.cache_policy import CACHE_ADMIN_ROUTES
from recovea_proxy.admin.caps import CAPS_ADMIN_ROUTES
from recovea_proxy.admin.kms_api import KMS_ADMIN_ROUTES
from recovea_proxy.admin.ledger_api import LEDGER_ADMIN_ROUTES
from recovea_proxy.admin.limits import LIMITS_ADMIN_ROUTES
from recovea_proxy.admin.routes import ROUTES_ADMIN_ROUTES
from recovea_proxy.admin.slim_policy import SLIM_ADMIN_ROUTES
from recovea_proxy.asgi import Receive, Scope, Send
from recovea_proxy.config import Settings
from recovea_proxy.endpoints import ROUTES, not_found
from recovea_proxy.gc_tuning import settle_after_startup
from recovea_proxy.meter.api import LEDGER_ROUTES
from recovea_proxy.observability.logging import configure_logging
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.openapi import OPENAPI_ROUTES
from recovea_proxy.proxy import handle
from recovea_proxy.reconcile.api import RECONCILE_ROUTES
from recovea_proxy.runtime import open_runtime
from recovea_proxy.surfaces import SurfaceMap, for_headers
from recovea_proxy.ui import ui_routes
from recovea_proxy.websocket_proxy import serve_websocket


class GatewayApp(Starlette):
    """Starlette for the gateway's own routes; provider paths skip its middleware stack
    and go straight to the raw ASGI pipeline (one dict lookup per request). Every
    path is checked on its raw bytes first; one that fails is refused by the pipeline
    with 400 `invalid_path`. WebSocket handshakes on provider paths go to
    `websocket_proxy` (Realtime); the gateway's own paths take none."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.surfaces = SurfaceMap()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            surface = self.surfaces.resolve(scope.get("raw_path") or scope["path"].encode())
            if surface is not None:
                if surface.anthropic_twin is not None:
                    surface = for_headers(surface, scope["headers"])
                await handle(scope["state"]["runtime"], surface, scope, receive, send)
                return
        elif scope["type"] == "websocket":
            surface = self.surfaces.resolve(scope.get("raw_path") or scope["path"].encode())
            if surface is not None:
                await serve_websocket(scope["state"]["runtime"], surface, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    """The gateway app (a factory: `uvicorn --factory recovea_proxy.app:create_app`)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    header_check.install(httptools_impl)
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_runtime(settings, metrics) as runtime:
            settle_after_startup()
            yield {"runtime": runtime}

    return GatewayApp(
        routes=[
            *ROUTES,
            *ADMIN_ROUTES,
            *KMS_ADMIN_ROUTES,
            *CACHE_ADMIN_ROUTES,
            *LIMITS_ADMIN_ROUTES,
            *ROUTES_ADMIN_ROUTES,
            *SLIM_ADMIN_ROUTES,
            *CAPS_ADMIN_ROUTES,
            *LEDGER_ADMIN_ROUTES,
            *LEDGER_ROUTES,
            *RECONCILE_ROUTES,
            *ui_routes(),
            *OPENAPI_ROUTES,
        ],
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )
