"""`/admin/v1/workspace/kms`: the caller's workspace's own AWS KMS key over HTTP (admin
keys only), the same operations as `recovea workspace kms set|clear` and the KMS part
of `recovea workspace show`.

| method, path                   | what |
| GET    /admin/v1/workspace/kms | the key, and what a gateway last saw of it |
| PUT    /admin/v1/workspace/kms | `{key_id}`: put the workspace on that key (re-wraps |
|                                | its provider keys) |
| DELETE /admin/v1/workspace/kms | back to the deployment's master key (re-wraps them; |
|                                | `?drop_provider_keys=true` deletes them instead)    |

A key the gateway cannot use is 400 `invalid_request` and changes nothing; a re-wrap
that the workspace's current key refuses, or a KMS that cannot be reached, is 503
`provider_key_unavailable` and changes nothing either.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recovea_proxy.admin import kms_operations as kms
from recovea_proxy.admin.api import admin, bad_request, declared_body, json_response, scoped
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.contract import (
    UUID,
    Operation,
    Param,
    declare,
    integer,
    nullable,
    obj,
    string,
)
from recovea_proxy.runtime import Runtime

_KMS_STATUS = nullable(string(enum=["available", "unavailable", "unknown"]))
_TEXT_OR_NULL = nullable(string())


@declare(
    Operation(
        "The workspace's own KMS key, and what a gateway last saw of it",
        obj(
            {
                "key_id": _TEXT_OR_NULL,
                "key_arn": _TEXT_OR_NULL,
                "set_at": _TEXT_OR_NULL,
                "status": _KMS_STATUS,
                "reason": _TEXT_OR_NULL,
                "since": _TEXT_OR_NULL,
                "checked_at": _TEXT_OR_NULL,
            }
        ),
    )
)
async def get_kms(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    return json_response(
        await scoped(runtime, key, lambda conn: kms.workspace_kms(conn, key.customer_id))
    )


@declare(
    Operation(
        "Put the workspace on its own KMS key (re-wraps its provider keys)",
        obj(
            {
                "workspace_id": UUID,
                "kms_key_id": string(),
                "kms_key_arn": string(),
                "rewrapped": integer(),
            }
        ),
        body=obj({"key_id": string(minLength=1, maxLength=2048)}, closed=True),
    )
)
async def set_kms(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    async with runtime.pool.acquire() as conn:
        result = await kms.set_workspace_kms(
            conn, runtime.keyring, key.customer_id, body.get("key_id") or ""
        )
    runtime.auth.forget_workspace_keys(key.customer_id)
    return json_response(result)


@declare(
    Operation(
        "Put the workspace back on the deployment's master key",
        obj(
            {
                "workspace_id": UUID,
                "kms_key_id": {"type": "null"},
                "kms_key_arn": {"type": "null"},
                "master_key_id": string(),
                "rewrapped": integer(),
                "dropped": integer(),
            }
        ),
        query=(
            Param(
                "drop_provider_keys",
                string(enum=["true", "false"]),
                "delete the provider keys instead of re-wrapping them",
            ),
        ),
    )
)
async def clear_kms(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    drop = request.query_params.get("drop_provider_keys", "false")
    if drop not in ("true", "false"):
        raise bad_request("drop_provider_keys must be true or false.")
    async with runtime.pool.acquire() as conn:
        result = await kms.clear_workspace_kms(
            conn, runtime.keyring, key.customer_id, drop_provider_keys=drop == "true"
        )
    runtime.auth.forget_workspace_keys(key.customer_id)
    return json_response(result)


KMS_ADMIN_ROUTES = [
    Route("/admin/v1/workspace/kms", admin(get_kms), methods=["GET"]),
    Route("/admin/v1/workspace/kms", admin(set_kms), methods=["PUT"]),
    Route("/admin/v1/workspace/kms", admin(clear_kms), methods=["DELETE"]),
]
