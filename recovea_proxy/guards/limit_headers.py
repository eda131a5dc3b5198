"""The 429 `rate_limited` answer, with the headers the providers' SDKs read.

Both official Python SDKs wait `retry-after-ms` (else `retry-after`) before they
retry a 429 (openai up to 120 s, anthropic whatever it says), so the wait the
gateway states is the wait the caller takes. Beside them, the provider's own
rate-limit headers for the limit that refused:

| surface   | headers (`{kind}`: requests or tokens)        | reset given as          |
| OpenAI    | `x-ratelimit-{limit,remaining,reset}-{kind}`  | `250ms`, `1.5s`, `6m0s` |
| Anthropic | `anthropic-ratelimit-{kind}-{limit,remaining,reset}` | an RFC 3339 time |

and `x-recovea-limit: <kind>; scope=<scope>` naming the limit (never a key). A
concurrency refusal has no provider header of its own: it says `retry-after: 1`.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from recovea_proxy.errors import GatewayError

Headers = tuple[tuple[bytes, bytes], ...]


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `250ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


def _rfc3339(seconds_from_now: float) -> str:
    moment = datetime.fromtimestamp(time.time() + seconds_from_now, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _retry(wait_s: float) -> Headers:
    return (
        (b"retry-after", str(max(1, math.ceil(wait_s))).encode()),
        (b"retry-after-ms", str(max(1, math.ceil(wait_s * 1000))).encode()),
    )


def _per(window_s: float) -> str:
    return "per minute" if window_s == 60 else f"per {window_s:g} s"


def rate_limited(
    shape: str,
    kind: str,
    scope: str,
    *,
    limit: int,
    remaining: int,
    reset_s: float,
    wait_s: float,
    window_s: float,
) -> GatewayError:
    """A requests or tokens limit refused: when to retry, and the limit's state."""
    if shape == "anthropic":
        prefix = f"anthropic-ratelimit-{kind}-"
        state: Headers = (
            ((prefix + "limit").encode(), str(limit).encode()),
            ((prefix + "remaining").encode(), str(remaining).encode()),
            ((prefix + "reset").encode(), _rfc3339(reset_s).encode()),
        )
    else:
        state = (
            (f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
            (f"x-ratelimit-remaining-{kind}".encode(), str(remaining).encode()),
            (f"x-ratelimit-reset-{kind}".encode(), _duration(reset_s).encode()),
        )
    return GatewayError(
        429,
        "rate_limited",
        f"Rate limit reached: {limit} {kind} {_per(window_s)} for this {scope}; "
        f"retry in {wait_s:.3g} s.",
        (*_retry(wait_s), *state, _named(kind, scope)),
    )


def too_many_in_flight(scope: str, limit: int) -> GatewayError:
    """A concurrency limit refused."""
    return GatewayError(
        429,
        "rate_limited",
        f"Concurrency limit reached: {limit} requests in flight for this {scope}; "
        "retry when one has finished.",
        (*_retry(1), _named("concurrency", scope)),
    )


def unverifiable(kind: str, scope: str) -> GatewayError:
    """A fail-closed limit whose counters cannot be reached."""
    return GatewayError(
        429,
        "rate_limited",
        f"The {kind} limit for this {scope} cannot be checked now (its counters are "
        "unreachable) and is set to fail closed; retry shortly.",
        (*_retry(1), _named(kind, scope)),
    )


def _named(kind: str, scope: str) -> tuple[bytes, bytes]:
    return (b"x-recovea-limit", f"{kind}; scope={scope}".encode())
