"""The gateway's own small endpoints: health, readiness, metrics, security.txt,
and the OpenAI-shaped 404 for paths outside every surface."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from recovea_proxy.errors import error_body
from recovea_proxy.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    """Readiness: resources are open and the process is not shutting down."""
    runtime = _runtime(request)
    if runtime.ready and not runtime.session.closed:
        return PlainTextResponse("ready\n")
    return PlainTextResponse("not ready\n", status_code=503)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this process's registry."""
    registry = _runtime(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def security_txt(request: Request) -> Response:
    """RFC 9116 security contact."""
    contact = _runtime(request).settings.security_contact
    text = (
        f"Contact: {contact}\n"
        "Expires: 2027-12-31T23:59:59Z\n"
        "Preferred-Languages: en\n"
        "Policy: https://github.com/recovea/recovea-proxy/blob/main/docs/security.md\n"
    )
    return PlainTextResponse(text)


async def not_found(request: Request, exc: Exception) -> Response:
    """A path outside every surface: 404 in OpenAI's shape (most clients speak it)."""
    body = error_body(
        "openai", 404, "not_found", f"Unknown path {request.url.path[:200]!r} on this gateway."
    )
    return Response(body, status_code=404, media_type="application/json")


ROUTES = [
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/.well-known/security.txt", security_txt, methods=["GET"]),
]
