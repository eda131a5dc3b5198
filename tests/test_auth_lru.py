"""The key resolver's bounded memory (`ExpiringLru`): a fixed number of entries, the
least recently used out first, each until its own expiry, and every value that
leaves handed back so what is kept beside it can go too."""

from __future__ import annotations

import pytest

from recovea_proxy.auth.lru import ExpiringLru


def test_holds_at_most_max_entries_and_hands_back_the_oldest() -> None:
    """Past `max_entries`, each put pushes out the least recently used entry."""
    cache: ExpiringLru[str, int] = ExpiringLru(3)
    dropped = [cache.put(f"k{n}", n, expires=100, now=0) for n in range(10)]
    assert 3 == len(cache)
    assert [[], [], [], [0], [1], [2], [3], [4], [5], [6]] == dropped
    assert [None, 7, 8, 9] == [cache.get(k, 0) for k in ("k6", "k7", "k8", "k9")]


def test_a_lookup_makes_an_entry_recent() -> None:
    """An entry that is read is the last to go, not the first."""
    cache: ExpiringLru[str, int] = ExpiringLru(2)
    cache.put("a", 1, expires=100, now=0)
    cache.put("b", 2, expires=100, now=0)
    assert 1 == cache.get("a", 1)
    assert [2] == cache.put("c", 3, expires=100, now=1)
    assert (1, None, 3) == (cache.get("a", 1), cache.get("b", 1), cache.get("c", 1))


def test_an_expired_entry_is_not_served_and_leaves_from_the_old_end() -> None:
    """Past its expiry an entry is never returned; the next put drops it (and hands it
    back) once it is the oldest."""
    cache: ExpiringLru[str, int] = ExpiringLru(10)
    cache.put("old", 1, expires=5, now=0)
    cache.put("new", 2, expires=50, now=0)
    assert None is cache.get("old", 5)
    assert 2 == len(cache)
    assert [1] == cache.put("newer", 3, expires=60, now=6)
    assert 2 == len(cache)


def test_replacing_a_value_hands_nothing_back() -> None:
    """A put for a key already held replaces its value and makes it recent."""
    cache: ExpiringLru[str, int] = ExpiringLru(2)
    cache.put("a", 1, expires=100, now=0)
    cache.put("b", 2, expires=100, now=0)
    assert [] == cache.put("a", 10, expires=100, now=0)
    assert [2] == cache.put("c", 3, expires=100, now=0)
    assert 10 == cache.get("a", 0)


def test_pop_and_clear_forget() -> None:
    """pop forgets one key (returning its value), clear forgets all."""
    cache: ExpiringLru[str, int] = ExpiringLru(5)
    cache.put("a", 1, expires=100, now=0)
    cache.put("b", 2, expires=100, now=0)
    assert (1, None) == (cache.pop("a"), cache.pop("a"))
    cache.clear()
    assert (0, None) == (len(cache), cache.get("b", 0))


def test_needs_room_for_one_entry() -> None:
    """A cache that could hold nothing is a configuration error."""
    with pytest.raises(ValueError):
        ExpiringLru[str, int](0)
