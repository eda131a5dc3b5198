"""What a provider reported about one response: token usage, finish reason, outcome.

`Usage` is filled by a provider's parser from a JSON body or by its stream tap as
SSE lines pass. A count the provider did not report stays None, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

#: the largest token count kept: counts above it are clamped to it. Sums of a
#: billion such counts still fit Postgres's bigint, so no rollup can overflow.
COUNT_MAX = 2**31 - 1


@dataclass(slots=True)
class Usage:
    """Token counts and outcome read from one response, normalized across providers.

    `input_tokens` counts every input token, cached ones included (OpenAI's
    convention; Anthropic's three input fields are summed). `terminal` is True once
    the provider signalled a normal end; `error` once it reported an error.

    What pricing needs beyond the ledger's columns: `cache_write_5m_tokens` and
    `cache_write_1h_tokens`, the part of `input_tokens` written to the prompt cache
    for 5 minutes or 1 hour, and `service_tier`, the tier that served the request
    when it was not the provider's standard one (`flex`, `priority`, `scale`,
    `batch`, ...; None for standard or when the provider did not say).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    terminal: bool = False
    error: bool = False
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    service_tier: str | None = None


#: the names of `Usage`'s fields, in order...
USAGE_FIELDS = tuple(field.name for field in fields(Usage))
#: ... and their values of one `Usage`, as a tuple (read in C)
usage_values = attrgetter(*USAGE_FIELDS)


def copy_usage(usage: Usage) -> Usage:
    """A copy of `usage` (its fields are numbers, strings and flags: shallow is whole;
    `copy.copy` of a slotted dataclass goes through `__reduce_ex__`, ~4x the cost)."""
    return Usage(*usage_values(usage))


def as_count(value: Any) -> int | None:
    """A token count as the provider sent it: a non-negative int (at most COUNT_MAX,
    larger ones are clamped), or None."""
    if type(value) is int and value >= 0:
        return value if value <= COUNT_MAX else COUNT_MAX
    return None


def nested_count(obj: Any, outer: str, inner: str) -> int | None:
    """`obj[outer][inner]` as a count, None when any level is missing."""
    details = obj.get(outer) if isinstance(obj, dict) else None
    if isinstance(details, dict):
        return as_count(details.get(inner))
    return None


def served_tier(value: Any, standard: str) -> str | None:
    """The service tier a response names, None when it is the provider's `standard`
    one or not a string (cleaned and bounded where the record is built)."""
    return value if isinstance(value, str) and value != standard else None
