"""Who is calling, and with which provider credentials the call goes upstream.

Fail-closed: every path out of `authenticate` is a Principal or a GatewayError;
nothing is served without one. An rcv_ key is resolved through the KeyResolver and
the call goes upstream on the workspace's own provider key; with
RECOVEA_PASSTHROUGH=on, a provider key sent instead is forwarded untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovea_proxy.auth.keys import looks_like_key
from recovea_proxy.auth.resolver import KeyRecord, KeyResolver, invalid
from recovea_proxy.errors import GatewayError
from recovea_proxy.headers import RequestHeaders
from recovea_proxy.providers.base import Provider

PASSTHROUGH_WORKSPACE = "passthrough"
RCV_PREFIX = "rcv_"


@dataclass(slots=True)
class Principal:
    """The authenticated caller of one request."""

    workspace_id: str
    key_id: str | None
    role: str
    env: str
    project: str | None
    team: str | None
    #: headers that carry the provider credential upstream
    upstream_credentials: tuple[tuple[str, str], ...]
    project_id: str | None = None
    team_id: str | None = None


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


class Authenticator:
    """Resolves a request's credentials to a Principal, or refuses."""

    def __init__(
        self,
        *,
        passthrough: bool,
        resolver: KeyResolver | None,
        passthrough_workspace_id: str = PASSTHROUGH_WORKSPACE,
    ) -> None:
        self._passthrough = passthrough
        self._resolver = resolver
        self._passthrough_workspace_id = passthrough_workspace_id

    async def authenticate(self, headers: RequestHeaders, provider: Provider) -> Principal:
        """The caller's principal; GatewayError 401 (no/bad key) or 503 (store down)."""
        token = _bearer(headers.authorization) or headers.api_key
        if not token:
            raise GatewayError(401, "invalid_api_key", "Missing API key.")
        if token.startswith(RCV_PREFIX):
            return await self._rcv_principal(token, provider)
        if not self._passthrough:
            raise GatewayError(
                401,
                "invalid_api_key",
                "This gateway needs an rcv_ key; provider keys are accepted only in "
                "passthrough mode.",
            )
        credentials: list[tuple[str, str]] = []
        if headers.authorization is not None:
            credentials.append(("authorization", headers.authorization))
        if headers.api_key is not None:
            credentials.append(("x-api-key", headers.api_key))
        return Principal(
            workspace_id=self._passthrough_workspace_id,
            key_id=None,
            role="member",
            env="live",
            project=None,
            team=None,
            upstream_credentials=tuple(credentials),
        )

    async def admin_key(self, headers: RequestHeaders) -> KeyRecord:
        """The rcv_ key of a management request (any role; the caller checks it)."""
        token = _bearer(headers.authorization) or headers.api_key
        if not token:
            raise GatewayError(401, "invalid_api_key", "Missing API key.")
        if self._resolver is None or not looks_like_key(token):
            raise invalid()
        return await self._resolver.resolve(token)

    def forget_provider_key(self, customer_id: str, provider: str) -> None:
        """Drop a cached provider key after it changed."""
        if self._resolver is not None:
            self._resolver.forget_provider_key(customer_id, provider)

    async def _rcv_principal(self, token: str, provider: Provider) -> Principal:
        if self._resolver is None or not looks_like_key(token):
            raise invalid()
        key = await self._resolver.resolve(token)
        secret = await self._resolver.provider_key(key.customer_id, provider.name)
        if secret is None:
            raise GatewayError(
                400,
                "provider_key_missing",
                f"This workspace has no {provider.name} key; store one with "
                "`recovea provider-key set`.",
            )
        try:
            credentials = provider.credential_headers(secret.decode())
        finally:
            secret[:] = bytes(len(secret))
        return Principal(
            workspace_id=key.customer_id,
            key_id=key.id,
            role=key.role,
            env=key.env,
            project=key.project,
            team=key.team,
            upstream_credentials=credentials,
            project_id=key.project_id,
            team_id=key.team_id,
        )
