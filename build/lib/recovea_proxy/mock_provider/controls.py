"""What one mock request should look like: token counts, pacing and the fault to inject.

Defaults come from the command line (`MockDefaults`); each request may override
them with `x-mock-*` headers, which a gateway forwards like any other header.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, replace

from multidict import CIMultiDictProxy

FAULTS = frozenset(
    {
        "500",
        "429",
        "529",
        "reset",
        "reset-mid-stream",
        "hang",
        "stall-mid-stream",
        "no-usage",
        "error-event",
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


@dataclass(frozen=True, slots=True)
class Plan:
    """One request's behaviour: defaults, header overrides, and derived ids."""

    shape: MockDefaults
    fault: str | None
    digest: str

    @property
    def created(self) -> int:
        return 1_700_000_000 + int(self.digest[:6], 16) % 1_000_000


_INT_HEADERS = {
    "x-mock-chunks": "chunks",
    "x-mock-input-tokens": "input_tokens",
    "x-mock-output-tokens": "output_tokens",
    "x-mock-cached-tokens": "cached_tokens",
    "x-mock-reasoning-tokens": "reasoning_tokens",
}
_FLOAT_HEADERS = {
    "x-mock-chunk-delay-ms": "chunk_delay_ms",
    "x-mock-first-byte-delay-ms": "first_byte_delay_ms",
}


def plan_for(defaults: MockDefaults, headers: CIMultiDictProxy[str], identity: bytes) -> Plan:
    """The plan of one request (header overrides that do not parse are ignored).

    Ids derive from `identity`, so the same request always gets the same bytes back.
    """
    changes: dict[str, float | int] = {}
    for header, field in _INT_HEADERS.items():
        raw = headers.get(header)
        if raw is not None and raw.strip().isdigit():
            changes[field] = int(raw)
    for header, field in _FLOAT_HEADERS.items():
        raw = headers.get(header)
        if raw is not None:
            try:
                changes[field] = max(0.0, float(raw))
            except ValueError:
                pass
    shape = replace(defaults, **changes) if changes else defaults  # type: ignore[arg-type]
    fault = headers.get("x-mock-fault")
    return Plan(
        shape=shape,
        fault=fault if fault in FAULTS else None,
        digest=hashlib.sha256(identity).hexdigest(),
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The mock's flags (defaults for every request)."""
    d = MockDefaults()
    parser.add_argument("--chunks", type=int, default=d.chunks, help="content chunks per stream")
    parser.add_argument("--chunk-delay-ms", type=float, default=d.chunk_delay_ms)
    parser.add_argument("--first-byte-delay-ms", type=float, default=d.first_byte_delay_ms)
    parser.add_argument("--input-tokens", type=int, default=d.input_tokens)
    parser.add_argument("--output-tokens", type=int, default=d.output_tokens)
    parser.add_argument("--cached-tokens", type=int, default=d.cached_tokens)
    parser.add_argument("--reasoning-tokens", type=int, default=d.reasoning_tokens)


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
    )
