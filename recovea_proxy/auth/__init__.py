"""Who is calling, and with which provider credentials the call goes upstream.

Fail-closed: every path out of `known_principal` then `load_principal` is a
Principal or a GatewayError; nothing is served without one. `known_principal` is
synchronous and answers from the caches (the hot path); only when it returns None
does `load_principal` await the key store.
An rcv_ key is resolved through the KeyResolver and the call goes upstream on the
workspace's own provider key; with RECOVEA_PASSTHROUGH=on, a provider key sent
instead is forwarded untouched.

Which credential a request carries (`Authorization` and `x-api-key` together):

| headers                                             | outcome                       |
| neither                                             | 401 (missing)                 |
| an rcv_ key (`Bearer <key>` or `x-api-key: <key>`), | authenticated with that key;  |
| whatever the other header holds                     | nothing of the caller's goes  |
|                                                     | upstream                      |
| rcv_ in any case at the start of a word of either   | 401, never forwarded          |
| header, not exactly one well-formed key there       |                               |
| (`RCV_live_…`, bad length, another scheme, two      |                               |
| different keys)                                     |                               |
| anything else                                       | passthrough (when on) or 401  |

So a value that begins with rcv_ is never forwarded to a provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recovea_proxy.auth.keys import PREFIXES
from recovea_proxy.auth.resolver import KeyRecord, KeyResolver, invalid
from recovea_proxy.errors import GatewayError
from recovea_proxy.headers import RequestHeaders
from recovea_proxy.policy import DEFAULT_POLICY, PASSTHROUGH_POLICY, LeverPolicy
from recovea_proxy.providers.base import Provider

PASSTHROUGH_WORKSPACE = "passthrough"
#: "rcv_" in any case where a token begins (not inside a base64url run such as a
#: provider key, which may contain those four characters by chance)
_RCV_MARK = re.compile(r"(?<![A-Za-z0-9_-])rcv_", re.IGNORECASE)
_KEY_PREFIXES = tuple(PREFIXES.values())


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
    #: what the workspace chose for its levers
    policy: LeverPolicy = DEFAULT_POLICY


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def _missing() -> GatewayError:
    return GatewayError(401, "invalid_api_key", "Missing API key.")


def rcv_credential(headers: RequestHeaders) -> str | None:
    """The rcv_ key the request authenticates with; None when neither credential
    header holds anything rcv_-like. GatewayError 401 when one does but it is not
    exactly one well-formed key (see the module's table)."""
    found: str | None = None
    for value, token in (
        (headers.authorization, _bearer(headers.authorization)),
        (headers.api_key, headers.api_key),
    ):
        if value is None:
            continue
        if token is None or not token.startswith(_KEY_PREFIXES):
            if "rcv_" not in value.lower() or _RCV_MARK.search(value) is None:
                continue
            raise invalid()
        # The rest of its shape is checked before any lookup (a cached key is a key).
        if found is not None and token != found:
            raise invalid()
        found = token
    return found


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
        # Bound once: one attribute lookup per request on the hot path.
        self._cached_provider_key = (
            resolver.provider_keys.cached if resolver is not None else _no_provider_key
        )

    def known_principal(self, headers: RequestHeaders, provider: Provider) -> Principal | None:
        """The principal when it needs no waiting: a provider key in passthrough mode, or
        an rcv_ key whose record and workspace provider key are both cached (the common
        case). None when `load_principal` must load something; refusals that need
        nothing loaded are raised here already."""
        token = rcv_credential(headers)
        if token is None:
            return self._passthrough_principal(headers)
        if self._resolver is None:
            raise invalid()
        key = self._resolver.cached(token)
        if key is None:
            return None
        secret = self._cached_provider_key(key.customer_id, provider.name)
        if secret is None:
            return None
        return _rcv_principal(key, provider, secret)

    async def load_principal(self, headers: RequestHeaders, provider: Provider) -> Principal:
        """The principal of an rcv_ key `known_principal` could not answer from the
        caches (it returned None); GatewayError 401 (unknown/revoked key), 400 (the
        workspace has no key for this provider) or 503 (store down)."""
        token = rcv_credential(headers)
        # known_principal answered (or refused) anything else
        assert self._resolver is not None and token is not None
        key = await self._resolver.resolve(token)
        secret = await self._resolver.provider_keys.load(key.customer_id, provider.name)
        if secret is None:
            raise GatewayError(
                400,
                "provider_key_missing",
                f"This workspace has no {provider.name} key; store one with "
                "`recovea provider-key set`.",
            )
        return _rcv_principal(key, provider, secret)

    def _passthrough_principal(self, headers: RequestHeaders) -> Principal:
        if not _bearer(headers.authorization) and not headers.api_key:
            raise _missing()
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
            policy=PASSTHROUGH_POLICY,
        )

    async def admin_key(self, headers: RequestHeaders) -> KeyRecord:
        """The rcv_ key of a management request (any role; the caller checks it)."""
        token = rcv_credential(headers)
        if token is None:
            if not _bearer(headers.authorization) and not headers.api_key:
                raise _missing()
            raise invalid()
        if self._resolver is None:
            raise invalid()
        return await self._resolver.resolve(token)

    async def credentials_for(
        self, customer_id: str, provider: Provider
    ) -> tuple[tuple[str, str], ...] | None:
        """The headers that carry the workspace's key for another provider (a routing
        rule's target); None when it has none. GatewayError 503 when it cannot be read."""
        if self._resolver is None:
            return None
        secret = self._cached_provider_key(customer_id, provider.name)
        if secret is None:
            secret = await self._resolver.provider_keys.load(customer_id, provider.name)
        if secret is None:
            return None
        try:
            return provider.credential_headers(secret.decode())
        finally:
            secret[:] = bytes(len(secret))

    def forget_provider_key(self, customer_id: str, provider: str) -> None:
        """Drop a cached provider key after it changed."""
        if self._resolver is not None:
            self._resolver.provider_keys.forget(customer_id, provider)

    def forget_key(self, key_id: str) -> None:
        """Drop a cached rcv_ key (and the rules it came with) at once."""
        if self._resolver is not None:
            self._resolver.forget(key_id)

    def forget_workspace_keys(self, customer_id: str) -> None:
        """Drop a workspace's cached provider keys after its own KMS key changed."""
        if self._resolver is not None:
            self._resolver.provider_keys.forget_workspace(customer_id)


def _no_provider_key(_customer_id: str, _provider: str) -> bytearray | None:
    return None


def _rcv_principal(key: KeyRecord, provider: Provider, secret: bytearray) -> Principal:
    """The principal of a resolved rcv_ key; the plaintext provider key is overwritten
    once it is in the upstream header."""
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
        policy=key.policy,
    )
