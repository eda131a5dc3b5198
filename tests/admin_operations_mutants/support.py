"""A unique name, and the line an operation refuses with."""

from __future__ import annotations

import uuid

import pytest

from recovea_proxy.admin import operations as ops


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def refusal(work: object) -> str:
    with pytest.raises(ops.OperationError) as caught:
        await work  # type: ignore[misc]
    return str(caught.value)
