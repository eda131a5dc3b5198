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

A key whose material (all of the above, as bytes) is at most `MATERIAL_KEY_MAX` is
that material itself, not its digest: as exact (two keys are equal exactly when
their SHA-256 would be), and a dict hashes it in a fraction of what SHA-256 costs a
miss (~1 µs here, with OpenSSL's set-up). Larger ones are their 32-byte digest, so an
entry never costs more than that much for its key. Material is always longer than
32 bytes (it names the workspace, the provider and the path), so the two kinds never
meet; Redis names both by the SHA-256 (`digest`), so replicas agree whatever their
bound.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

#: fields that say who asks, not what is asked: left out of the key
IDENTITY_FIELDS = ("user", "metadata", "safety_identifier", "prompt_cache_key")
#: the types a `temperature` of 0 may come as (bool is not one: `false` is no number)
_NUMBERS = (int, float)
#: the longest key kept as its material rather than its SHA-256 (see above)
MATERIAL_KEY_MAX = 1024
#: a digest's length: a key of this length is a SHA-256, never material
DIGEST_SIZE = 32
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
    """The entry key of a shareable request: its material, or the SHA-256 of it when
    longer than `MATERIAL_KEY_MAX`; `plan`: its routing plan's key (a routed request
    may be answered by any of its targets, so only the same plan shares)."""
    body = parsed
    for field in IDENTITY_FIELDS:
        if field in parsed:
            body = {name: value for name, value in parsed.items() if name not in IDENTITY_FIELDS}
            break
    head = f"{workspace_id}\n{method}\n{provider}\n{path}\n".encode()
    if plan:
        head += b"plan\n" + plan + b"\n"
    material = head + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    if DIGEST_SIZE < len(material) <= MATERIAL_KEY_MAX:
        return material
    return hashlib.sha256(material).digest()


def digest(key: bytes) -> bytes:
    """The SHA-256 an entry key stands for (what names it outside this process)."""
    return key if len(key) == DIGEST_SIZE else hashlib.sha256(key).digest()
