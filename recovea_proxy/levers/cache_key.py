"""Which requests may be shared (answered from the exact cache, or joined to a flight
in progress), and the key they are shared under.

Eligible: a POST whose body is a JSON object, when the workspace's cache policy is
not `off`; under `deterministic` (the default) only with `temperature` 0 or a
`seed`. Never: `n` > 1, `store: true`, `previous_response_id` or `conversation` (the
answer depends on state the body does not hold, or the provider keeps the answer
itself; where a provider stores answers by default, as OpenAI's Responses API does,
only a body that says `store: false` may be shared: the cache lever checks the
request's surface for that); nor a body nested deeper than
`orjson` writes (`key_of` raises `orjson.JSONEncodeError`: the cache lever says
`skip`).

The key is SHA-256 over the workspace, the method, the provider and path, a routed
request's plan (its targets in order: any of them may answer), the query string and
the request headers that shape the answer (an API version, beta features), and the
canonical JSON of the whole body (sorted keys, `stream` included) less a short
deny-list of identity fields. A deny-list, not an allow-list: a parameter a provider
adds tomorrow changes the key instead of being ignored. The workspace is in the key,
so one tenant can neither read nor probe another's entries.

All of it is one JSON array, written by one `orjson.dumps` call (sorted keys):
`[workspace, method, provider, path, body]`, or `[workspace, method, provider, path,
plan, beside, body]` for a routed request or one whose provider reads something
besides the body (`beside`: its query string, and the headers of
`headers.ANSWER_HEADERS`, such as `anthropic-beta`); a purged workspace's `workspace`
is `[workspace, generation]`. JSON spells each part unambiguously, so two
requests have the same material exactly when they ask the same thing.

A key whose material is at most `MATERIAL_KEY_MAX` bytes is that material itself,
not its digest: as exact (two keys are equal exactly when their SHA-256 would be),
and a dict hashes it in a fraction of what SHA-256 costs a miss (~1 µs here, with
OpenSSL's set-up). Larger ones are their 32-byte digest, so an entry never costs
more than that much for its key. Material of 32 bytes or fewer is hashed too, so the
two kinds never meet; Redis names both by the SHA-256 (`digest`), so replicas agree
whatever their bound.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

#: fields that say who asks, not what is asked: left out of the key
IDENTITY_FIELDS = ("user", "metadata", "safety_identifier", "prompt_cache_key")
_IDENTITY = frozenset(IDENTITY_FIELDS)
#: the longest key kept as its material rather than its SHA-256 (see above)
MATERIAL_KEY_MAX = 1024
#: a digest's length: a key of this length is a SHA-256, never material
DIGEST_SIZE = 32
#: fields whose presence makes the answer depend on state outside the body
STATEFUL_FIELDS = ("previous_response_id", "conversation")
#: the fields that may rule a request out: most bodies have none of them, which one C
#: call tells (`dict.keys().isdisjoint` looks each of these up in the body)
_SCREENED = frozenset({"n", "store", *STATEFUL_FIELDS})


def shareable(parsed: dict[str, Any], cache_policy: str) -> bool:
    """Whether a request with this body may be answered from the cache or a flight."""
    if cache_policy == "deterministic":
        temperature = parsed.get("temperature")
        # 0 or 0.0, not `false` (which == 0); a parsed body holds no other number type
        if not ((temperature == 0 and temperature is not False) or type(parsed.get("seed")) is int):
            return False
    elif cache_policy == "off":
        return False
    return parsed.keys().isdisjoint(_SCREENED) or _screened_shareable(parsed)


def _screened_shareable(parsed: dict[str, Any]) -> bool:
    """A body with one of the `_SCREENED` fields: whether it is shareable all the same
    (`n` of 1, `store` false)."""
    n = parsed.get("n")
    if type(n) is int and n > 1:
        return False
    if parsed.get("store") is True:
        return False
    return all(name not in parsed for name in STATEFUL_FIELDS)


def key_of(
    workspace_id: str | None,
    method: str,
    provider: str,
    path: str,
    parsed: dict[str, Any],
    plan: str = "",
    generation: int = 0,
    beside: str = "",
) -> bytes:
    """The entry key of a shareable request: its material, or the SHA-256 of it when
    longer than `MATERIAL_KEY_MAX`; `plan`: its routing plan's key (a routed request
    may be answered by any of its targets, so only the same plan shares);
    `generation`: the workspace's cache generation (a purge raises it; at 0, the
    usual one, the material leaves it out); `beside`: what the provider reads besides
    the body (the query string, the headers that shape its answer), when anything."""
    body = parsed
    if not parsed.keys().isdisjoint(_IDENTITY):
        body = {name: value for name, value in parsed.items() if name not in _IDENTITY}
    space = workspace_id if not generation else (workspace_id, generation)
    material = orjson.dumps(
        (space, method, provider, path, plan, beside, body)
        if plan or beside
        else (space, method, provider, path, body),
        option=orjson.OPT_SORT_KEYS,
    )
    if DIGEST_SIZE < len(material) <= MATERIAL_KEY_MAX:
        return material
    return hashlib.sha256(material).digest()


def digest(key: bytes) -> bytes:
    """The SHA-256 an entry key stands for (what names it outside this process)."""
    return key if len(key) == DIGEST_SIZE else hashlib.sha256(key).digest()
