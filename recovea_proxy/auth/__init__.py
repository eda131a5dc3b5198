"""Who is calling, and with which provider credentials the call goes upstream.

Fail-closed: every path out of `authenticate` is a Principal or a GatewayError;
nothing is served without one. Today the only principal is the passthrough one
(RECOVEA_PASSTHROUGH=on: the caller's own provider key is forwarded untouched).
rcv_ keys are resolved here once the key store exists (workspaces issue); until
then an rcv_ key is refused as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovea_proxy.errors import GatewayError
from recovea_proxy.headers import RequestHeaders

PASSTHROUGH_WORKSPACE = "passthrough"
RCV_PREFIX = "rcv_"


@dataclass(frozen=True, slots=True)
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


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


class Authenticator:
    """Resolves a request's credentials to a Principal, or refuses."""

    def __init__(self, *, passthrough: bool) -> None:
        self._passthrough = passthrough

    async def authenticate(self, headers: RequestHeaders) -> Principal:
        """The caller's principal; GatewayError(401) when it has none."""
        token = _bearer(headers.authorization) or headers.api_key
        if not token:
            raise GatewayError(401, "invalid_api_key", "Missing API key.")
        if token.startswith(RCV_PREFIX):
            raise GatewayError(401, "invalid_api_key", "Invalid API key.")
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
            workspace_id=PASSTHROUGH_WORKSPACE,
            key_id=None,
            role="member",
            env="live",
            project=None,
            team=None,
            upstream_credentials=tuple(credentials),
        )
