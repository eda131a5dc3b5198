"""Why a workspace's own KMS key could not be used, in five words.

Every failure of a call to a workspace's key maps to one reason, the label of
`recovea_provider_key_unavailable_total` and the `reason` that `recovea workspace
show` prints. The reasons are a closed set, so a metric label never holds an AWS
message (which may name accounts, roles and keys).

| reason          | KMS answered (error code) or what happened                        |
| disabled        | DisabledException; KMSInvalidStateException (pending deletion,   |
|                 | pending import, unavailable custom key store)                     |
| access_denied   | AccessDeniedException (policy or grant removed); our credentials |
|                 | refused (UnrecognizedClientException, InvalidSignatureException, |
|                 | ExpiredTokenException, ...)                                       |
| not_found       | NotFoundException (deleted, or never there); a malformed key id  |
|                 | (InvalidArnException)                                             |
| unreachable     | no answer: connection refused or reset, a timeout, a 5xx,        |
|                 | KMSInternalException, DependencyTimeoutException, throttling     |
| refused         | anything else KMS refused: the data key was not wrapped under    |
|                 | this key or this context (InvalidCiphertextException,             |
|                 | IncorrectKeyException), or an answer the gateway did not expect   |
"""

from __future__ import annotations

REASONS = ("disabled", "access_denied", "not_found", "unreachable", "refused")
#: the reasons that say the customer took the key away (not a passing fault)
REVOKED = frozenset({"disabled", "access_denied", "not_found"})

_BY_CODE = {
    "DisabledException": "disabled",
    "KMSInvalidStateException": "disabled",
    "AccessDeniedException": "access_denied",
    "AccessDenied": "access_denied",
    "UnrecognizedClientException": "access_denied",
    "InvalidSignatureException": "access_denied",
    "ExpiredTokenException": "access_denied",
    "InvalidClientTokenId": "access_denied",
    "IncompleteSignature": "access_denied",
    "MissingAuthenticationToken": "access_denied",
    "NotFoundException": "not_found",
    "InvalidArnException": "not_found",
    "KMSInternalException": "unreachable",
    "DependencyTimeoutException": "unreachable",
    "ThrottlingException": "unreachable",
    "LimitExceededException": "unreachable",
    "ServiceUnavailable": "unreachable",
    "InternalFailure": "unreachable",
}


class KmsKeyRefused(Exception):
    """A workspace's own KMS key could not be used; `reason` is one of REASONS."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the workspace's KMS key could not be used ({reason})")
        self.reason = reason


def reason_for(exc: BaseException) -> str:
    """The reason (one of REASONS) behind an exception raised by a boto3 KMS call."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        found = _BY_CODE.get(str(error.get("Code", "")))
        if found is not None:
            return found
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return "unreachable" if isinstance(status, int) and status >= 500 else "refused"
    if isinstance(exc, BotoCoreError | OSError | TimeoutError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ...: no answer
        return "unreachable"
    return "refused"
