"""`/openapi.json` stays true: it is written from the routes the app serves, every
admin and ledger route declares its contract, and schemathesis, run against a live
gateway (a real process, real Postgres), finds no 500, no answer outside the schema
and no error outside the documented shapes. Other workspaces' ids are 404.

What schemathesis does not call, and why:
- `PUT /admin/v1/workspace/kms` asks AWS KMS about the key it is given; there is no
  KMS here (test_workspace_kms runs it against moto);
- `DELETE /admin/v1/workspace` only deletes with `?confirm=<the caller's id>`, which
  generated data cannot guess: it is called, and only ever refused, but the run's
  workspace is its own all the same, so nothing it writes reaches another test.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from recovea_proxy.admin.api import admin
from recovea_proxy.app import create_app
from recovea_proxy.contract import Operation, array, declare, obj
from recovea_proxy.openapi import PREFIXES, undeclared
from recovea_proxy.openapi import document as openapi_document
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, cli_json

#: examples per operation and generation mode: enough to reach every error branch of
#: these small handlers, few enough to keep the module under a minute and a half
MAX_EXAMPLES = int(os.environ.get("RECOVEA_TEST_OPENAPI_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def keys(db_env: dict[str, str]) -> dict[str, str]:
    """A workspace of its own for the run: an admin key and a member key."""
    workspace = cli_json("workspace", "create", "openapi-run", env=db_env)["workspace_id"]
    admin = cli_json("key", "create", "--workspace", workspace, "--role", "admin", env=db_env)
    member = cli_json("key", "create", "--workspace", workspace, env=db_env)
    return {"workspace": workspace, "admin": admin["key"], "member": member["key"]}


@pytest.fixture(scope="module")
def document(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def api_schema(gateway: Gateway, document: dict[str, Any]) -> Any:
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=gateway.url)
    return schema.exclude(method="PUT", path="/admin/v1/workspace/kms")


def test_every_admin_and_ledger_route_declares_its_contract() -> None:
    """A route under /admin/v1 or /v1/recovea without an `Operation` fails here, so a
    new endpoint (caps, ...) cannot be served undocumented."""
    app = create_app()
    assert undeclared(app.routes) == []


def test_a_new_route_appears_at_once_and_is_named_until_it_declares() -> None:
    """A route behind the key wrapper whose handler declares nothing (a new endpoint,
    such as spend caps) is in the document at once, with a placeholder (its docstring's
    first line, any JSON object, the errors it could answer), and `undeclared` names it;
    declared, it leaves the list."""

    async def show_caps(request: Any, runtime: Any, key: Any) -> Any:
        """The workspace's caps."""

    routes = [Route("/admin/v1/caps", admin(show_caps), methods=["GET"])]
    assert undeclared(routes) == ["GET /admin/v1/caps"]
    placeholder = openapi_document(routes)["paths"]["/admin/v1/caps"]["get"]
    assert placeholder["summary"] == "The workspace's caps."
    assert placeholder["x-recovea-undeclared"] is True
    assert placeholder["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "object"
    }
    assert sorted(placeholder["responses"]) == ["200", "400", "401", "403", "404", "413", "503"]
    declared = declare(Operation("Caps", obj({"data": array(obj({}))})))(show_caps)
    routes = [Route("/admin/v1/caps", admin(declared), methods=["GET"])]
    assert undeclared(routes) == []
    assert "403" in openapi_document(routes)["paths"]["/admin/v1/caps"]["get"]["responses"]


def test_the_document_covers_the_routes_and_the_error_shapes(document: dict[str, Any]) -> None:
    """OpenAPI 3.1, every served admin/ledger path in it, bearer rcv_ security, and the
    documented error statuses on every operation."""
    assert document["openapi"] == "3.1.0"
    served = {
        route.path.replace(":path}", "}")
        for route in create_app().routes
        if getattr(route, "path", "").startswith(PREFIXES)
    }
    assert served == set(document["paths"])
    assert document["components"]["securitySchemes"]["rcvKey"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"401", "503"} <= statuses, (method, path)
            assert operation["security"] == [{"rcvKey": []}]
            if path.startswith("/admin/"):
                assert "403" in statuses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= statuses, (method, path)


_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _exercise(
    operation: Any, mode: GenerationMode, headers: dict[str, str], calls: list[int]
) -> str | None:
    """Run `MAX_EXAMPLES` generated cases of one operation; the first failure, if any."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        calls.append(1)
        case.call_and_validate(headers=headers, checks=_CHECKS, timeout=10)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # a failed check, with the operation
        return f"{mode} {operation.label}: {exc}"[:2000]
    return None


def test_the_live_api_conforms(api_schema: Any, keys: dict[str, str]) -> None:
    """Schemathesis, against every operation (both generation modes), with an admin
    key: no 500s; every status, content type and body is what the document says;
    data outside the schema is refused with a 4xx."""
    headers = {"authorization": f"Bearer {keys['admin']}"}
    failures = []
    calls: list[int] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _exercise(operation, mode, headers, calls)
            if failure is not None:
                failures.append(failure)
    assert failures == [], "\n\n".join(failures)
    assert len(operations) >= 30
    assert len(calls) >= 2 * len(operations) * 5, "schemathesis made too few calls"


def _call(gateway: Gateway, key: str | None, method: str, path: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {} if method in ("post", "put", "patch") else None
    return httpx.request(method, f"{gateway.url}{path}", headers=headers, json=body)


def _concrete(path: str) -> str:
    return path.replace("{provider}", "openai").replace("{", "x").replace("}", "")


def test_keys_are_required_and_member_keys_are_refused_on_every_admin_route(
    gateway: Gateway, document: dict[str, Any], keys: dict[str, str]
) -> None:
    """Every documented operation: 401 in the documented shape without a key; every
    admin operation: 403 `forbidden` for a member key."""
    for path, operations in document["paths"].items():
        for method in operations:
            refused = _call(gateway, None, method, _concrete(path))
            assert refused.status_code == 401, (method, path)
            assert refused.json()["error"]["code"] == "invalid_api_key"
            if path.startswith("/admin/"):
                member = _call(gateway, keys["member"], method, _concrete(path))
                assert member.status_code == 403, (method, path, member.text)
                assert member.json()["error"] == {
                    "message": member.json()["error"]["message"],
                    "type": "permission_error",
                    "param": None,
                    "code": "forbidden",
                }


@pytest.fixture(scope="module")
def two_tenants(gateway: Gateway, db_env: dict[str, str]) -> tuple[Tenant, Tenant, dict[str, str]]:
    """Two workspaces; the first has a request in its ledger and a key, a limit and a
    routing rule of its own for the second to ask about."""
    owner = make_tenant(db_env, "openapi-owner")
    stranger = make_tenant(db_env, "openapi-stranger")
    admin = cli_json(
        "key", "create", "--workspace", stranger.workspace, "--role", "admin", env=db_env
    )
    owner_admin = cli_json(
        "key", "create", "--workspace", owner.workspace, "--role", "admin", env=db_env
    )
    sent = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=owner.bearer,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert sent.status_code == 200, sent.text
    request_id = sent.headers["x-request-id"]
    stored(gateway, owner, "requests", request_id)
    stored(gateway, owner, "receipts", request_id)
    bearer = {"authorization": f"Bearer {owner_admin['key']}"}
    limit = httpx.put(f"{gateway.url}/admin/v1/limits", headers=bearer, json={"rpm": 100000})
    assert limit.status_code == 200, limit.text
    rule = httpx.post(
        f"{gateway.url}/admin/v1/routes",
        headers=bearer,
        json={"match_model": "gpt-4o", "to": "gpt-4o-mini"},
    )
    assert rule.status_code == 201, rule.text
    ids = {
        "request_id": request_id,
        "key_id": owner.key_id,
        "limit_id": limit.json()["limit"]["id"],
        "rule_id": rule.json()["id"],
        "stranger_admin": admin["key"],
    }
    return owner, stranger, ids


def test_other_workspaces_ids_are_404(
    gateway: Gateway, two_tenants: tuple[Tenant, Tenant, dict[str, str]]
) -> None:
    """A request, receipt, key, limit or rule of another workspace is 404 `not_found`
    (never 403, which would say it exists), and is left as it was."""
    owner, stranger, ids = two_tenants
    member = stranger.bearer
    admin = {"authorization": f"Bearer {ids['stranger_admin']}"}
    for headers, method, path in (
        (member, "GET", f"/v1/recovea/requests/{ids['request_id']}"),
        (member, "GET", f"/v1/recovea/receipts/{ids['request_id']}"),
        (admin, "GET", f"/v1/recovea/requests/{ids['request_id']}"),
        (admin, "DELETE", f"/admin/v1/keys/{ids['key_id']}"),
        (admin, "DELETE", f"/admin/v1/limits/{ids['limit_id']}"),
        (admin, "DELETE", f"/admin/v1/routes/{ids['rule_id']}"),
    ):
        response = httpx.request(method, f"{gateway.url}{path}", headers=headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    # still there for their owner
    stored(gateway, owner, "requests", ids["request_id"])
    chains = httpx.get(f"{gateway.url}/v1/recovea/ledger", headers=member).json()
    assert chains["data"] == []
