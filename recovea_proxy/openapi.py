"""`GET /openapi.json`: OpenAPI 3.1 of `/admin/v1` and `/v1/recovea`, written from the
app's own routes and the `Operation` each handler declares (`contract`).

Nothing here is written by hand beside the code: the generator walks the routes the
app serves, and every route under the two prefixes must carry an `Operation`
(`undeclared` names those that do not; a test keeps the list empty). The errors of
the key wrapper are added to every operation: 401 `invalid_api_key`, 403 `forbidden`
(admin routes), 503 (`auth_unavailable`, `store_unavailable`,
`provider_key_unavailable`); an operation with a body adds 400 and 413, one with
path or query parameters 400 (`invalid_path`, or a parameter it refuses). All use the
OpenAI error shape. The document holds no secret and needs no key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from recovea_proxy import __version__
from recovea_proxy.contract import Operation, Param, Schema, obj, operation_of, string

#: the path prefixes the document covers
PREFIXES = ("/admin/v1/", "/v1/recovea/")

ERROR = obj(
    {
        "error": obj(
            {
                "message": string(),
                "type": string(),
                "param": {"type": "null"},
                "code": string(),
            }
        )
    },
    description="The OpenAI error shape the gateway answers its own errors in",
)

#: status -> (description, the codes it carries)
_ERRORS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: (
        "The input is invalid (the message says why), or the path holds dot segments,"
        " empty segments or encoded / ? # . %00",
        ("invalid_request", "invalid_path"),
    ),
    401: ("No key, or an unknown or revoked rcv_ key", ("invalid_api_key",)),
    403: (
        "A member key on an admin route, or an operation the workspace may not do",
        ("forbidden",),
    ),
    404: ("Nothing with that id in the caller's workspace", ("not_found",)),
    413: ("The body is larger than 64 KB", ("request_too_large",)),
    503: (
        "The key store, the database or the workspace's KMS key cannot be reached",
        ("auth_unavailable", "store_unavailable", "provider_key_unavailable"),
    ),
}
_PARAM = re.compile(r"{([^}:]+)(:[^}]+)?}")


def _template(path: str) -> tuple[str, list[str]]:
    """A Starlette path (`/prices/{model:path}`) as an OpenAPI one, and its params."""
    return _PARAM.sub(r"{\1}", path), [m.group(1) for m in _PARAM.finditer(path)]


def _methods(route: Route) -> list[str]:
    return sorted(m.lower() for m in (route.methods or ()) if m != "HEAD")


def _documented(routes: Iterable[BaseRoute]) -> Iterable[tuple[Route, str]]:
    for route in routes:
        if isinstance(route, Route) and route.path.startswith(PREFIXES):
            for method in _methods(route):
                yield route, method


def undeclared(routes: Iterable[BaseRoute]) -> list[str]:
    """`METHOD path` of each route under the prefixes without an `Operation`."""
    missing = []
    for route, method in _documented(routes):
        operation = operation_of(route.endpoint)
        if operation is None or not operation.declared:
            missing.append(f"{method.upper()} {route.path}")
    return missing


def _parameter(param: Param, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": param.name,
        "in": where,
        "required": where == "path" or param.required,
        "schema": param.schema,
    }
    if param.description:
        out["description"] = param.description
    return out


def _error_statuses(path: str, operation: Operation) -> list[int]:
    statuses = {401, 503, *operation.errors}
    if "{" in path or operation.query:
        # a path parameter can make the path one the gateway refuses; a query
        # parameter is checked by the handler
        statuses.add(400)
    if operation.admin_only:
        statuses.add(403)
    if operation.body is not None:
        statuses |= {400, 413}
    return sorted(statuses)


def _operation(path: str, method: str, operation: Operation) -> dict[str, Any]:
    template, names = _template(path)
    declared = {p.name: p for p in operation.path}
    parameters = [_parameter(declared.get(n) or Param(n, string()), "path") for n in names]
    parameters += [_parameter(p, "query") for p in operation.query]
    errors = _error_statuses(path, operation)
    out: dict[str, Any] = {
        "operationId": f"{method}{template}".replace("/", "_").replace("{", "").replace("}", ""),
        "summary": operation.summary,
        "tags": ["admin" if path.startswith("/admin/") else "ledger"],
        "security": [{"rcvKey": []}],
        "responses": {
            str(operation.status): {
                "description": "OK",
                "content": {"application/json": {"schema": operation.response}},
            },
            **{str(s): {"$ref": f"#/components/responses/E{s}"} for s in errors},
        },
    }
    if operation.admin_only:
        out["description"] = "Admin keys only (member keys get 403 `forbidden`)."
    if not operation.declared:
        out["x-recovea-undeclared"] = True
    if parameters:
        out["parameters"] = parameters
    if operation.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": operation.body}},
        }
    return out


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the declared routes among `routes`."""
    paths: dict[str, dict[str, Any]] = {}
    for route, method in _documented(routes):
        operation = operation_of(route.endpoint)
        if operation is None:
            continue
        paths.setdefault(_template(route.path)[0], {})[method] = _operation(
            route.path, method, operation
        )
    responses: dict[str, Schema] = {
        f"E{status}": {
            "description": f"{text}. Codes: {', '.join(codes)}.",
            "content": {
                "application/json": {
                    "schema": {
                        **ERROR,
                        "properties": {
                            "error": {
                                **ERROR["properties"]["error"],
                                "properties": {
                                    **ERROR["properties"]["error"]["properties"],
                                    "code": string(enum=list(codes)),
                                },
                            }
                        },
                    }
                }
            },
        }
        for status, (text, codes) in _ERRORS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Recovea gateway: admin and ledger API",
            "version": __version__,
            "description": "Workspace-scoped: every result is the caller's workspace's.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "rcvKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An rcv_ key (`Authorization: Bearer rcv_…`; "
                    "`x-api-key: rcv_…` works too)",
                }
            },
            "responses": responses,
        },
    }


async def openapi_json(request: Request) -> Response:
    """The document, from the app that serves this request; no auth."""
    body = orjson.dumps(document(request.app.routes))
    return Response(body, media_type="application/json")


OPENAPI_ROUTES = [Route("/openapi.json", openapi_json, methods=["GET"])]
