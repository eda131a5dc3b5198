"""What the mock does for one request: the defaults, the `x-mock-*` header overrides,
the fault to inject, and the ids derived from the request body.

Ids and `created` derive from the sha256 of the request body (made canonical, without
`stream_options`), so the same request always gets the same bytes back — also when a
gateway adds `stream_options.include_usage` on the client's behalf.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

FAULTS = frozenset(
    {
        "400",
        "500",
        "429",
        "529",
        "error-200",
        "reset",
        "reset-mid-stream",
        "hang",
        "stall-mid-stream",
        "no-usage",
        "error-event",
        "error-event-first",
        "gzip",
    }
)


@dataclass(frozen=True, slots=True)
class MockDefaults:
    """The mock's behaviour when a request does not say otherwise."""

    chunks: int = 16
    chunk_delay_ms: float = 0
    first_byte_delay_ms: float = 0
    input_tokens: int = 12
    output_tokens: int = 16
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    #: input written to the prompt cache for 5 minutes / 1 hour (part of the input)
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0


@dataclass(frozen=True, slots=True)
class InputParts:
    """The input tokens split as Anthropic reports them (they add up to the input)."""

    uncached: int
    read: int
    write_5m: int
    write_1h: int

    @property
    def written(self) -> int:
        return self.write_5m + self.write_1h


@dataclass(frozen=True, slots=True)
class Plan:
    """One request's behaviour: the token shape, the fault, and the body digest."""

    shape: MockDefaults
    fault: str | None
    digest: str
    #: the finish (stop) reason to report instead of the natural one: a hostile
    #: provider's string, given as a JSON string literal in `x-mock-finish-reason`
    finish_reason: str | None = None
    #: the service tier to report as the one that served (`x-mock-service-tier`)
    service_tier: str | None = None
    #: write JSON bodies indented, as OpenAI writes embeddings (`x-mock-pretty: 1`)
    pretty: bool = False
    #: send JSON bodies chunked, without a content-length (`x-mock-chunked: 1`)
    chunked: bool = False
    #: answer with the dissenting text (`x-mock-disagree-model` names the model)
    disagree: bool = False

    def reason(self, natural: str) -> str:
        """The finish reason to report: the override, else `natural`."""
        return natural if self.finish_reason is None else self.finish_reason

    def tier(self, standard: str) -> str:
        """The service tier to report: the override, else the provider's `standard`."""
        return standard if self.service_tier is None else self.service_tier

    def input_parts(self) -> InputParts:
        """The input split into cache reads, writes (each bounded by what is left of the
        input) and the rest."""
        s = self.shape
        read = min(s.cached_tokens, s.input_tokens)
        write_5m = min(s.cache_write_5m_tokens, s.input_tokens - read)
        write_1h = min(s.cache_write_1h_tokens, s.input_tokens - read - write_5m)
        return InputParts(s.input_tokens - read - write_5m - write_1h, read, write_5m, write_1h)

    @property
    def created(self) -> int:
        return 1_700_000_000 + int(self.digest[:6], 16) % 1_000_000

    @property
    def request_id(self) -> str:
        return "req_" + self.digest[24:48]

    @property
    def usage(self) -> bool:
        """False when the request asked for no usage anywhere (`x-mock-fault: no-usage`)."""
        return self.fault != "no-usage"

    def ident(self, prefix: str) -> str:
        return prefix + self.digest[:24]

    def output_tokens(self, limit: Any) -> tuple[int, bool]:
        """(output tokens, cut short by `limit`?) for a request's max-tokens value."""
        out = self.shape.output_tokens
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < out:
            return limit, True
        return out, False


_INT_HEADERS = (
    ("x-mock-chunks", "chunks"),
    ("x-mock-input-tokens", "input_tokens"),
    ("x-mock-output-tokens", "output_tokens"),
    ("x-mock-cached-tokens", "cached_tokens"),
    ("x-mock-reasoning-tokens", "reasoning_tokens"),
    ("x-mock-cache-write-5m-tokens", "cache_write_5m_tokens"),
    ("x-mock-cache-write-1h-tokens", "cache_write_1h_tokens"),
)
_FLOAT_HEADERS = (
    ("x-mock-chunk-delay-ms", "chunk_delay_ms"),
    ("x-mock-first-byte-delay-ms", "first_byte_delay_ms"),
)


def identity(raw: bytes, body: Any) -> bytes:
    """The bytes ids derive from: the body without `stream_options`, keys sorted."""
    if isinstance(body, dict):
        if "stream_options" in body:
            body = {k: v for k, v in body.items() if k != "stream_options"}
        try:
            return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # nested deeper than orjson writes
            return raw
    return raw


def model_fault(raw: str | None, model: object) -> str | None:
    """The fault `x-mock-fault-model: <model>=<fault>[,<model>=<fault>…]` names for the
    request's model (a routed model can fail while the caller's own model answers)."""
    if not raw or not isinstance(model, str):
        return None
    for item in raw.split(","):
        name, _, fault = item.strip().rpartition("=")
        if name == model and fault in FAULTS:
            return fault
    return None


def plan_for(
    defaults: MockDefaults, headers: Mapping[str, str], ident: bytes, model: object = None
) -> Plan:
    """The plan of one request; header overrides that do not parse are ignored. A fault
    for the request's model (`x-mock-fault-model`) wins over `x-mock-fault`."""
    changes: dict[str, Any] = {}
    for header, field in _INT_HEADERS:
        raw = headers.get(header)
        if raw is not None and raw.strip().isdigit():
            changes[field] = int(raw)
    for header, field in _FLOAT_HEADERS:
        raw = headers.get(header)
        if raw is not None:
            try:
                changes[field] = max(0.0, float(raw))
            except ValueError:
                pass
    fault = model_fault(headers.get("x-mock-fault-model"), model) or headers.get("x-mock-fault")
    return Plan(
        shape=replace(defaults, **changes) if changes else defaults,
        fault=fault if fault in FAULTS else None,
        digest=hashlib.sha256(ident).hexdigest(),
        finish_reason=_json_string(headers.get("x-mock-finish-reason")),
        service_tier=headers.get("x-mock-service-tier") or None,
        pretty=headers.get("x-mock-pretty") == "1",
        chunked=headers.get("x-mock-chunked") == "1",
        disagree=isinstance(model, str)
        and model in _names(headers.get("x-mock-disagree-model")),
    )


def _names(raw: str | None) -> tuple[str, ...]:
    """The comma-separated names of a header (none when it is absent)."""
    return tuple(name.strip() for name in raw.split(",")) if raw else ()


def _json_string(raw: str | None) -> str | None:
    """A header holding a JSON string literal (so it can carry any character), or None."""
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The mock's flags: defaults for every request."""
    d = MockDefaults()
    parser.add_argument("--chunks", type=int, default=d.chunks, help="content chunks per stream")
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=d.chunk_delay_ms, help="pause between events"
    )
    parser.add_argument(
        "--first-byte-delay-ms",
        type=float,
        default=d.first_byte_delay_ms,
        help="pause before the response headers",
    )
    parser.add_argument("--input-tokens", type=int, default=d.input_tokens)
    parser.add_argument("--output-tokens", type=int, default=d.output_tokens)
    parser.add_argument("--cached-tokens", type=int, default=d.cached_tokens)
    parser.add_argument("--reasoning-tokens", type=int, default=d.reasoning_tokens)
    parser.add_argument("--cache-write-5m-tokens", type=int, default=d.cache_write_5m_tokens)
    parser.add_argument("--cache-write-1h-tokens", type=int, default=d.cache_write_1h_tokens)


def defaults_from_args(ns: argparse.Namespace) -> MockDefaults:
    """MockDefaults from parsed flags."""
    return MockDefaults(
        chunks=ns.chunks,
        chunk_delay_ms=ns.chunk_delay_ms,
        first_byte_delay_ms=ns.first_byte_delay_ms,
        input_tokens=ns.input_tokens,
        output_tokens=ns.output_tokens,
        cached_tokens=ns.cached_tokens,
        reasoning_tokens=ns.reasoning_tokens,
        cache_write_5m_tokens=ns.cache_write_5m_tokens,
        cache_write_1h_tokens=ns.cache_write_1h_tokens,
    )
