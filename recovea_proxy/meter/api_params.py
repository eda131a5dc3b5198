"""The query parameters the ledger API's reads share: a moment (`from`, `to`) and a
bounded integer (`limit`, `after_seq`). A malformed one is a 400 that names it.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request

from recovea_proxy.admin.api import bad_request
from recovea_proxy.meter.rollup import parse_moment


def moment(request: Request, name: str, default: datetime) -> datetime:
    """The parameter `name` as a moment, or `default` when it is absent or empty."""
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        return parse_moment(raw)
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 date or time.") from None


def int_param(request: Request, name: str, default: int, maximum: int) -> int:
    """The parameter `name` as an integer from 0 to `maximum`, or `default` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # isdecimal, not isdigit: "²" is a digit that int() cannot read
    if not raw.isdecimal() or not 0 <= int(raw) <= maximum:
        raise bad_request(f"{name} must be an integer from 0 to {maximum}.")
    return int(raw)
