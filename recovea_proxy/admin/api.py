"""`/admin/v1/*`: the management API. An admin rcv_ key manages its own workspace;
member keys get 403. The operator's workspace (`default`) may also create
workspaces. Errors use the OpenAI shape; input is validated before anything is
written, and each operation writes in one transaction: a new workspace and its first
admin key are created together or not at all.

| method, path                              | what |
| GET    /admin/v1/workspace                | the caller's workspace |
| POST   /admin/v1/workspaces               | new workspace + first admin key (operator only) |
| GET    /admin/v1/keys                     | the workspace's rcv_ keys (last four only) |
| POST   /admin/v1/keys                     | create a key (shown once) |
| DELETE /admin/v1/keys/{key_id}            | revoke a key |
| GET    /admin/v1/provider-keys            | the workspace's provider keys (last four only) |
| PUT    /admin/v1/provider-keys/{provider} | store a provider key |
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.contract import (
    UUID,
    Operation,
    Param,
    Schema,
    check_body,
    declare,
    listing,
    nullable,
    obj,
    operation_of,
    string,
)
from recovea_proxy.errors import GatewayError, error_body
from recovea_proxy.headers import split_request_headers
from recovea_proxy.runtime import Runtime

MAX_BODY = 64 * 1024
OPERATOR_WORKSPACE = "default"
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

Handler = Callable[[Request, Runtime, KeyRecord], Awaitable[Response]]


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(exc: GatewayError) -> Response:
    return Response(
        error_body("openai", exc.status, exc.code, exc.message),
        status_code=exc.status,
        media_type="application/json",
    )


def _too_large() -> GatewayError:
    return GatewayError(413, "request_too_large", "Request body is larger than 64 KB.")


def bad_request(message: str) -> GatewayError:
    return GatewayError(400, "invalid_request", message)


async def read_json(request: Request, schema: Schema) -> dict[str, Any]:
    """The request's body (at most 64 KB), a JSON object that `schema` allows; 400 or
    413 otherwise."""
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > MAX_BODY:
        raise _too_large()
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        parts.append(chunk)
    raw = b"".join(parts)
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise bad_request("The body must be a JSON object.") from None
    try:
        return check_body(body, schema)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def declared_body(request: Request) -> dict[str, Any]:
    """The body the key wrapper read and checked against the handler's declared
    `Operation.body` (see `contract`)."""
    body: dict[str, Any] = request.state.body
    return body


def admin(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate (fail-closed), require the admin role, map errors to responses."""
    return keyed(handler, admin_only=True)


def keyed(handler: Handler, *, admin_only: bool) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate an rcv_ key (fail-closed), optionally require the admin role, read
    and check the body the handler declares, map errors to OpenAI-shaped responses.
    The handler's `Operation` (see `contract`) goes on the endpoint, for
    `/openapi.json`. A handler that declares none is still served and listed, with a
    placeholder marked undeclared (`openapi.undeclared` names it; a test fails)."""
    operation = operation_of(handler)
    schema = operation.body if operation is not None else None
    if operation is None:
        summary = (handler.__doc__ or handler.__name__).strip().splitlines()[0]
        operation = Operation(summary, {"type": "object"}, errors=(400, 404, 413), declared=False)

    async def endpoint(request: Request) -> Response:
        runtime: Runtime = request.state.runtime
        try:
            headers = split_request_headers(request.scope["headers"])
            key = await runtime.auth.admin_key(headers)
            if admin_only and key.role != "admin":
                raise GatewayError(403, "forbidden", "This route needs an admin key.")
            if schema is not None:
                request.state.body = await read_json(request, schema)
            return await handler(request, runtime, key)
        except GatewayError as exc:
            return _error(exc)
        except ops.KmsRefusedError as exc:
            code = "provider_key_unavailable" if exc.status == 503 else "invalid_request"
            return _error(GatewayError(exc.status, code, str(exc)))
        except ops.OperationError as exc:
            return _error(bad_request(str(exc)))
        except _DB_ERRORS:
            return _error(GatewayError(503, "store_unavailable", "The database is unreachable."))

    declare(replace(operation, admin_only=admin_only))(endpoint)
    return endpoint


async def scoped(
    runtime: Runtime, key: KeyRecord, work: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    async with runtime.pool.acquire() as conn, conn.transaction():
        await ops.scope(conn, key.customer_id)
        return await work(conn)


WORKSPACE = obj(
    {
        "id": UUID,
        "name": string(),
        "plan": string(enum=["free", "pro"]),
        "retention_days": nullable({"type": "integer"}),
        "created_at": string(format="date-time"),
    }
)
NAME = string(minLength=1, maxLength=100)
KEY = obj(
    {
        "id": UUID,
        "role": string(enum=["admin", "member"]),
        "env": string(enum=["live", "test"]),
        "project": nullable(string()),
        "team": nullable(string()),
        "last_four": string(),
        "created_at": string(format="date-time"),
        "revoked_at": nullable(string(format="date-time")),
    }
)
PROVIDER = string(enum=list(ops.PROVIDERS))


# Each handler's contract is an `Operation` named above it and declared on the line
# after it, not with `@declare`: mutmut (`make mutate`) makes no mutants of a decorated
# function.
GET_WORKSPACE = Operation("The caller's workspace", WORKSPACE)


async def get_workspace(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    return json_response(
        await scoped(runtime, key, lambda c: ops.describe_workspace(c, key.customer_id))
    )


declare(GET_WORKSPACE)(get_workspace)


CREATE_WORKSPACE = Operation(
    "Create a workspace and its first admin key (the operator workspace only)",
    obj({"id": UUID, "admin_key_id": UUID, "admin_key": string(pattern="^rcv_")}),
    status=201,
    body=obj(
        {"name": NAME, "plan": nullable(string(enum=["free", "pro"]))},
        required=("name",),
        closed=True,
    ),
)


async def create_workspace(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    caller = await scoped(runtime, key, lambda c: ops.describe_workspace(c, key.customer_id))
    if caller["name"] != OPERATOR_WORKSPACE:
        raise GatewayError(403, "forbidden", "Only the operator workspace creates workspaces.")
    async with runtime.pool.acquire() as conn, conn.transaction():
        # One transaction: a workspace never exists without its first admin key.
        workspace_id = await ops.create_workspace(
            conn, body.get("name") or "", body.get("plan") or "free"
        )
        first = await ops.create_key(conn, workspace_id, role="admin", env="live")
    return json_response(
        {"id": workspace_id, "admin_key_id": first.id, "admin_key": first.secret}, 201
    )


declare(CREATE_WORKSPACE)(create_workspace)


LIST_KEYS = Operation("The workspace's rcv_ keys (last four characters only)", listing(KEY))


async def list_keys(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    keys = await scoped(runtime, key, lambda c: ops.list_keys(c, key.customer_id))
    return json_response({"data": keys})


declare(LIST_KEYS)(list_keys)


CREATE_KEY = Operation(
    "Create an rcv_ key (shown once)",
    obj(
        {
            "id": UUID,
            "role": string(enum=["admin", "member"]),
            "env": string(enum=["live", "test"]),
            "key": string(pattern="^rcv_"),
            "last_four": string(),
        }
    ),
    status=201,
    body=obj(
        {
            "role": nullable(string(enum=["admin", "member"])),
            "env": nullable(string(enum=["live", "test"])),
            "project": nullable(NAME),
            "team": nullable(NAME),
        },
        required=(),
        closed=True,
    ),
)


async def create_key(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    async with runtime.pool.acquire() as conn:
        created = await ops.create_key(
            conn,
            key.customer_id,
            role=body.get("role") or "member",
            env=body.get("env") or "live",
            project=body.get("project"),
            team=body.get("team"),
        )
    return json_response(
        {
            "id": created.id,
            "role": created.role,
            "env": created.env,
            "key": created.secret,
            "last_four": created.last_four,
        },
        201,
    )


declare(CREATE_KEY)(create_key)


REVOKE_KEY = Operation(
    "Revoke an rcv_ key of the workspace",
    obj({"id": UUID, "revoked": {"const": True}}),
    path=(Param("key_id", UUID),),
    errors=(400, 404),
)


async def revoke_key(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    key_id = request.path_params["key_id"]
    ops.parse_id(key_id, "key id")
    async with runtime.pool.acquire() as conn:
        revoked = await ops.revoke_key(conn, key_id, key.customer_id)
    if not revoked:
        raise GatewayError(404, "not_found", "No active key with that id in this workspace.")
    return json_response({"id": key_id, "revoked": True})


declare(REVOKE_KEY)(revoke_key)


LIST_PROVIDER_KEYS = Operation(
    "The workspace's provider keys (last four characters only)",
    listing(
        obj(
            {
                "provider": PROVIDER,
                "last_four": string(),
                "backend": string(),
                "created_at": string(format="date-time"),
            }
        )
    ),
)


async def list_provider_keys(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    keys = await scoped(runtime, key, lambda c: ops.list_provider_keys(c, key.customer_id))
    return json_response({"data": keys})


declare(LIST_PROVIDER_KEYS)(list_provider_keys)


SET_PROVIDER_KEY = Operation(
    "Store (or replace) the workspace's key for a provider, envelope-encrypted",
    obj({"provider": PROVIDER, "last_four": string()}),
    body=obj({"key": string(minLength=1, maxLength=4096)}, closed=True),
    path=(Param("provider", PROVIDER),),
    errors=(404,),
)


async def set_provider_key(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    provider = request.path_params["provider"]
    if provider not in ops.PROVIDERS:
        raise GatewayError(404, "not_found", f"Unknown provider; use one of {ops.PROVIDERS}.")
    body = declared_body(request)
    secret = body.get("key") or ""
    async with runtime.pool.acquire() as conn:
        await ops.set_provider_key(conn, runtime.keyring, key.customer_id, provider, secret)
    runtime.auth.forget_provider_key(key.customer_id, provider)
    return json_response({"provider": provider, "last_four": secret.strip()[-4:]})


declare(SET_PROVIDER_KEY)(set_provider_key)


ADMIN_ROUTES = [
    Route("/admin/v1/workspace", admin(get_workspace), methods=["GET"]),
    Route("/admin/v1/workspaces", admin(create_workspace), methods=["POST"]),
    Route("/admin/v1/keys", admin(list_keys), methods=["GET"]),
    Route("/admin/v1/keys", admin(create_key), methods=["POST"]),
    Route("/admin/v1/keys/{key_id}", admin(revoke_key), methods=["DELETE"]),
    Route("/admin/v1/provider-keys", admin(list_provider_keys), methods=["GET"]),
    Route("/admin/v1/provider-keys/{provider}", admin(set_provider_key), methods=["PUT"]),
]
