"""Which requests may be shared (answered from the exact cache, or joined to a flight
in progress), and the key they are shared under.

Eligible: a POST whose body is a JSON object, when the workspace's cache policy is
not `off`; under `deterministic` (the default) only with `temperature` 0 or a
`seed`. Never: `n` > 1, `store: true`, `previous_response_id` or `conversation` (the
answer depends on state the body does not hold).

The key is SHA-256 over the workspace, the method, the provider and path, a routed
request's plan (its targets in order: any of them may answer), and the canonical
JSON of the whole body (sorted keys, `stream` included) less a short deny-list of
identity fields. A deny-list, not an allow-list: a parameter a provider
adds tomorrow changes the key instead of being ignored. The workspace is in the key,
so one tenant can neither read nor probe another's entries.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

#: fields that say who asks, not what is asked: left out of the key
IDENTITY_FIELDS = ("user", "metadata", "safety_identifier", "prompt_cache_key")
#: the types a `temperature` of 0 may come as (bool is not one: `false` is no number)
_NUMBERS = (int, float)
#: fields whose presence makes the answer depend on state outside the body
STATEFUL_FIELDS = ("previous_response_id", "conversation")


def shareable(parsed: dict[str, Any], cache_policy: str) -> bool:
    """Whether a request with this body may be answered from the cache or a flight."""
    if cache_policy == "off":
        return False
    if cache_policy == "deterministic":
        temperature = parsed.get("temperature")
        zero = type(temperature) in _NUMBERS and temperature == 0
        if not (zero or type(parsed.get("seed")) is int):
            return False
    n = parsed.get("n")
    if type(n) is int and n > 1:
        return False
    if parsed.get("store") is True:
        return False
    # each field looked up (a set's isdisjoint would walk every key of the body)
    for name in STATEFUL_FIELDS:
        if name in parsed:
            return False
    return True


def key_of(
    workspace_id: str,
    method: str,
    provider: str,
    path: str,
    parsed: dict[str, Any],
    plan: bytes = b"",
) -> bytes:
    """The entry key of a shareable request; `plan`: its routing plan's key (a routed
    request may be answered by any of its targets, so only the same plan shares)."""
    body = parsed
    for field in IDENTITY_FIELDS:
        if field in parsed:
            body = {name: value for name, value in parsed.items() if name not in IDENTITY_FIELDS}
            break
    head = f"{workspace_id}\n{method}\n{provider}\n{path}\n".encode()
    if plan:
        head += b"plan\n" + plan + b"\n"
    return hashlib.sha256(head + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
