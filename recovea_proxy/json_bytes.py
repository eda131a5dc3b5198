"""JSON bytes that the gateway holds for a request's life, sized to their content.

orjson writes into a 4 KiB buffer and hands it over without shrinking it, so a
400-byte body it made holds 4 KiB until it is freed. A body the levers rewrite lives
as long as its request — a stream's whole length, with thousands of streams open —
so it is copied once into a bytes object of its own size (a ~0.1 µs copy).
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps_held(value: Any) -> bytes:
    """`orjson.dumps(value)`, without the spare room of orjson's buffer."""
    return memoryview(orjson.dumps(value)).tobytes()
