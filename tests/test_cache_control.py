"""A request's headers as the exact cache reads them, in-process: the `Cache-Control`
directives, as RFC 9111 spells them, from caller bytes that cannot fault the lever;
and the headers that shape the provider's answer (part of the key)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovea_proxy.headers import split_request_headers
from recovea_proxy.levers.cache_control import (
    DIRECTIVES_MAX,
    MAX_AGE_CAP,
    NO_DIRECTIVES,
    CacheControl,
)


def read(value: bytes) -> tuple[bool, bool, int | None]:
    parsed = CacheControl.parse(value)
    return parsed.no_cache, parsed.no_store, parsed.max_age


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"no-cache", (True, False, None)),
        (b"no-store", (False, True, None)),
        (b"max-age=30", (False, False, 30)),
        (b"No-Cache, NO-STORE", (True, True, None)),
        (b"  max-age = 5 ,no-store", (False, True, 5)),
        (b'max-age="7"', (False, False, 7)),
        (b"max-age=0", (False, False, 0)),
        (b"max-age=0007", (False, False, 7)),
        # of several max-age, the smallest (the most careful) counts
        (b"max-age=60, max-age=10, max-age=20", (False, False, 10)),
        # not numbers: ignored, never an error
        (b"max-age=-1", (False, False, None)),
        (b"max-age=1.5", (False, False, None)),
        (b"max-age=", (False, False, None)),
        (b"max-age", (False, False, None)),
        ("max-age=²".encode(), (False, False, None)),
        # past the cap (and past what int() reads): the cap
        (b"max-age=" + b"9" * 5000, (False, False, MAX_AGE_CAP)),
        (b"max-age=4294967296", (False, False, MAX_AGE_CAP)),
        # directives the cache does not read, and ones that only look alike
        (b"private, must-revalidate, no-transform, only-if-cached", (False, False, None)),
        (b"no-cached, xno-store, s-maxage=5", (False, False, None)),
        (b"", (False, False, None)),
        (b",,,", (False, False, None)),
    ],
)
def test_directives(value: bytes, expected: tuple[bool, bool, int | None]) -> None:
    assert read(value) == expected


def test_only_the_first_directives_are_read() -> None:
    """A hostile value of thousands of commas costs a bounded split: directives past
    the first `DIRECTIVES_MAX` are not read (nor is the rest of the value walked)."""
    assert read(b"," * (DIRECTIVES_MAX - 1) + b"no-store") == (False, True, None)
    assert read(b"," * DIRECTIVES_MAX + b"no-store") == (False, False, None)
    assert read(b"," * 30_000 + b"no-store") == (False, False, None)


def test_a_value_without_directives_is_the_shared_empty_one() -> None:
    """Every request without a directive the cache reads gets the same object: nothing
    is made for it."""
    assert CacheControl.parse(b"private, no-transform") is NO_DIRECTIVES
    assert CacheControl.parse(b"no-store") is not NO_DIRECTIVES


def test_max_age_accepts_only_answers_that_young() -> None:
    now = time.time()
    assert CacheControl.parse(b"max-age=60").accepts(now - 30)
    assert not CacheControl.parse(b"max-age=60").accepts(now - 90)
    assert not CacheControl.parse(b"max-age=0").accepts(now - 1)
    assert NO_DIRECTIVES.accepts(now - 10**6)


@given(st.binary(max_size=300))
def test_any_bytes_parse_without_error(value: bytes) -> None:
    parsed = CacheControl.parse(value)
    assert parsed.max_age is None or 0 <= parsed.max_age <= MAX_AGE_CAP


def test_every_cache_control_line_is_read_and_all_are_forwarded() -> None:
    """Several `Cache-Control` lines make one list (RFC 9110 §5.3); each line still
    goes upstream as it came."""
    headers = split_request_headers(
        [(b"cache-control", b"max-age=60"), (b"accept", b"*/*"), (b"cache-control", b"no-store")]
    )
    assert headers.cache_control == b"max-age=60,no-store"
    assert read(headers.cache_control) == (False, True, 60)
    assert [pair for pair in headers.forward if pair[0] == "cache-control"] == [
        ("cache-control", "max-age=60"),
        ("cache-control", "no-store"),
    ]
    assert split_request_headers([(b"accept", b"*/*")]).cache_control is None


def test_the_headers_that_shape_an_answer_are_read_in_order_and_forwarded() -> None:
    """`anthropic-version`, `anthropic-beta` and `OpenAI-Beta` (every line, in order)
    are kept for the cache key, and still forwarded; a traceparent is read beside them."""
    trace = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"
    headers = split_request_headers(
        [
            (b"anthropic-beta", b"b1"),
            (b"traceparent", trace),
            (b"anthropic-version", b"2023-06-01"),
            (b"anthropic-beta", b"b2"),
            (b"user-agent", b"sdk"),
        ]
    )
    assert headers.answer_headers == (
        b"anthropic-beta: b1\nanthropic-version: 2023-06-01\nanthropic-beta: b2\n"
    )
    assert (headers.trace_id, headers.parent_span_id) == ("a" * 32, "b" * 16)
    assert [name for name, _ in headers.forward][1:] == [
        "anthropic-beta",
        "traceparent",
        "anthropic-version",
        "anthropic-beta",
        "user-agent",
    ]
    assert split_request_headers([(b"user-agent", b"sdk")]).answer_headers is None
