"""The exact cache's key, in-process: requests that ask the same thing share one key
whatever their key order or identity fields, requests that differ never do, and a
key means the same entry whether it is held as its material (a short request) or as
its SHA-256 (a long one): Redis names both by the SHA-256, and the memory bound
counts the key."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from recovea_proxy.levers.cache_key import (
    DIGEST_SIZE,
    MATERIAL_KEY_MAX,
    digest,
    key_of,
    shareable,
)
from recovea_proxy.levers.cache_redis import redis_key
from recovea_proxy.levers.cache_store import MemoryStore

WORKSPACE = "ws_0123456789abcdef"
PATH = "/v1/chat/completions"


def body(prompt: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": prompt}],
        **fields,
    }


def key(parsed: dict[str, Any], workspace: str = WORKSPACE) -> bytes:
    return key_of(workspace, "POST", "openai", PATH, parsed)


def material_of(parsed: dict[str, Any]) -> bytes:
    """What the key stands for, spelled out here as the docs describe it: one JSON
    array, the body's keys sorted."""
    return orjson.dumps([WORKSPACE, "POST", "openai", PATH, parsed], option=orjson.OPT_SORT_KEYS)


SHORT = "what is 2 + 2?"
LONG = "a long question " * 100  # the body alone is past MATERIAL_KEY_MAX


@pytest.mark.parametrize("prompt", [SHORT, LONG], ids=["short", "long"])
def test_the_same_question_shares_a_key_and_a_different_one_never_does(prompt: str) -> None:
    """Key order and identity fields do not matter; the workspace, any other field and
    the prompt do — for a key held as material and for one held as its digest."""
    asked = body(prompt)
    reordered = dict(reversed(list(body(prompt, user="u-1", metadata={"a": "b"}).items())))
    assert key(asked) == key(reordered)
    assert key(asked) != key(body(prompt, seed=1))
    assert key(asked) != key(body(prompt + "?"))
    assert key(asked) != key(asked, workspace="ws_another_workspace")


def test_a_purged_workspace_keys_the_same_question_anew() -> None:
    """The cache generation (raised by a purge) is part of the key: each generation's
    key differs, generation 0 keys as ever, and a long body's digest differs too."""
    parsed = body("purge")
    long = body("purge " * 400)
    keys = {
        key_of(WORKSPACE, "POST", "openai", PATH, parsed, "", generation) for generation in range(3)
    }
    assert len(keys) == 3
    assert key_of(WORKSPACE, "POST", "openai", PATH, parsed, "", 0) == key(parsed)
    digests = {key_of(WORKSPACE, "POST", "openai", PATH, long, "", g) for g in (0, 1)}
    assert len(digests) == 2 and all(len(d) == DIGEST_SIZE for d in digests)


def test_a_short_key_is_its_material_and_a_long_one_its_digest() -> None:
    """Both name the SHA-256 of the same material outside the process, so two replicas
    agree on an entry's Redis name whatever their bound; Redis never sees a prompt."""
    for prompt in (SHORT, LONG):
        parsed = body(prompt)
        material = material_of(parsed)
        sha = hashlib.sha256(material).digest()
        found = key(parsed)
        if len(material) <= MATERIAL_KEY_MAX:
            assert found == material and len(found) > DIGEST_SIZE
        else:
            assert found == sha
        assert digest(found) == sha
        assert redis_key(found) == b"recovea:cache:v1:" + sha.hex().encode()
        assert prompt.encode() not in redis_key(found)
    # both kinds were exercised
    assert len(key(body(SHORT))) > DIGEST_SIZE == len(key(body(LONG)))


def test_the_memory_bound_counts_each_entry_with_its_key() -> None:
    """Entries under kilobyte keys: the store holds what fits with the keys counted,
    evicting the oldest, and its size is exactly what it holds."""
    store = MemoryStore(20_000)
    keys = [key(body(f"question {i} " + "x" * 700)) for i in range(40)]
    assert all(800 < len(k) <= MATERIAL_KEY_MAX for k in keys)
    sizes = [
        store.keep(k, 200, ((b"content-type", b"application/json"),), [b"{}"], 60) for k in keys
    ]
    held = [k for k in keys if store.holds(k)]
    assert held == keys[-len(held) :]  # the newest, in order
    assert store.size == sum(
        size + len(k) for size, k in zip(sizes, keys, strict=True) if k in held
    )
    assert store.size <= 20_000 < store.size + sizes[0] + len(keys[0])
    assert len(held) < 20_000 // sizes[0]  # fewer than if keys cost nothing


def test_the_kind_of_key_changes_exactly_past_the_bound() -> None:
    """Material of exactly `MATERIAL_KEY_MAX` bytes is the key; one byte more, the
    SHA-256 of it is."""
    empty = len(material_of(body("")))
    at_bound = body("x" * (MATERIAL_KEY_MAX - empty))
    past_bound = body("x" * (MATERIAL_KEY_MAX - empty + 1))
    assert len(material_of(at_bound)) == MATERIAL_KEY_MAX
    assert key(at_bound) == material_of(at_bound)
    assert key(past_bound) == hashlib.sha256(material_of(past_bound)).digest()


@pytest.mark.parametrize(
    ("fields", "policy", "expected"),
    [
        ({"temperature": 0}, "deterministic", True),
        ({"temperature": 0.0}, "deterministic", True),
        ({"temperature": False}, "deterministic", False),  # `false` == 0, but no number
        ({"temperature": "0"}, "deterministic", False),
        ({"temperature": 0.2}, "deterministic", False),
        ({"seed": 7}, "deterministic", True),
        ({"seed": True}, "deterministic", False),
        ({}, "deterministic", False),
        ({}, "all", True),
        ({"temperature": 0}, "off", False),
        ({"temperature": 0, "n": 1}, "deterministic", True),
        ({"temperature": 0, "n": 2}, "deterministic", False),
        ({"n": 3}, "all", False),
        ({"temperature": 0, "store": False}, "deterministic", True),
        ({"temperature": 0, "store": True}, "deterministic", False),
        ({"temperature": 0, "previous_response_id": "resp_1"}, "deterministic", False),
        ({"conversation": "conv_1"}, "all", False),
        ({"temperature": 0, "n": 1, "store": False, "user": "u"}, "deterministic", True),
    ],
)
def test_which_bodies_may_be_shared(fields: dict[str, Any], policy: str, expected: bool) -> None:
    """`deterministic` takes a `temperature` of 0 or an integer `seed`; no policy shares
    `n` > 1, `store: true` or an answer that depends on stored state."""
    assert shareable({"model": "gpt-4o-mini", **fields}, policy) is expected
