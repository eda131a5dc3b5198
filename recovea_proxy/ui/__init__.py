"""`/ui/`: the usage page. Static HTML, JavaScript modules and CSS shipped in the
package (`ui/static/`, no build step), read once when the app is built and served
from memory with a strict Content-Security-Policy (this origin only, no inline
script or style), `nosniff`, and an ETag to revalidate against (`no-cache`: a new
version of the package is seen at once).

The page holds no secret: it calls the workspace-scoped `/v1/recovea/*` endpoints
(and, for admin keys, `/admin/v1/*`) with the rcv_ key the user pastes, which it
keeps in the browser's `sessionStorage` only. See docs/ui.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the page, in memory, with its content type and ETag."""

    body: bytes
    content_type: str
    etag: str


def load_static() -> dict[str, StaticFile]:
    """The page's files by name (`index.html` also under ""); only known types."""
    found: dict[str, StaticFile] = {}
    for entry in files(__name__).joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[entry.name] = StaticFile(body, CONTENT_TYPES[suffix], etag)
    found[""] = found["index.html"]
    return found


def ui_routes() -> list[Route]:
    """`GET /ui` (redirect), `GET /ui/` (the page) and `GET /ui/{file}`."""
    static = load_static()

    async def serve(request: Request) -> Response:
        item = static.get(request.path_params["name"])
        if item is None:
            return PlainTextResponse("Not found.\n", status_code=404, headers=SECURITY_HEADERS)
        headers = {**SECURITY_HEADERS, "etag": item.etag, "cache-control": "no-cache"}
        if item.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(item.body, media_type=item.content_type, headers=headers)

    async def to_page(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=308, headers=SECURITY_HEADERS)

    return [
        Route("/ui", to_page, methods=["GET", "HEAD"]),
        Route("/ui/{name:path}", serve, methods=["GET", "HEAD"]),
    ]
