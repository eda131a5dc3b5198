"""A request's `Cache-Control` directives, as the exact cache reads them (RFC 9111
§5.2.1):

- `no-cache`: no stored answer is served; the provider answers, and its answer is
  kept (as `X-Recovea-Cache: refresh`);
- `no-store`: the answer is not kept (a stored one may still be served);
- `max-age=N`: no stored answer older than N seconds is served.

Other directives are ignored. The header itself is forwarded to the provider as it
came. Read from caller bytes, so every value is bounded and none can fault the lever:
an unreadable `max-age` is ignored, one past 2^31 counts as 2^31 (RFC 9111 §1.2.2),
and only the first `DIRECTIVES_MAX` directives are read (a value of thousands of
commas would otherwise cost the event loop milliseconds).
"""

from __future__ import annotations

import time

#: directives read of one request's `Cache-Control` (real ones have a few)
DIRECTIVES_MAX = 32
#: the largest max-age taken as given (RFC 9111 §1.2.2: a larger one counts as this)
MAX_AGE_CAP = 2**31
#: digits past this many are a max-age past the cap (int() of a long run of digits is
#: a cost the caller chooses, and past 4,300 digits an error)
_MAX_AGE_DIGITS = len(str(MAX_AGE_CAP))


class CacheControl:
    """What a request's `Cache-Control` asks of the exact cache."""

    __slots__ = ("max_age", "no_cache", "no_store")

    def __init__(
        self, *, no_cache: bool = False, no_store: bool = False, max_age: int | None = None
    ) -> None:
        self.no_cache = no_cache
        self.no_store = no_store
        #: the oldest stored answer accepted, in seconds (None: any fresh one)
        self.max_age = max_age

    @classmethod
    def parse(cls, value: bytes) -> CacheControl:
        """The directives of a `Cache-Control` value (lines already joined by commas).
        Names are case-insensitive; of several `max-age`, the smallest counts."""
        no_cache = no_store = False
        max_age: int | None = None
        for directive in value.lower().split(b",", DIRECTIVES_MAX)[:DIRECTIVES_MAX]:
            name, _, argument = directive.partition(b"=")
            name = name.strip()
            if name == b"no-cache":
                no_cache = True
            elif name == b"no-store":
                no_store = True
            elif name == b"max-age":
                seconds = _delta_seconds(argument)
                if seconds is not None and (max_age is None or seconds < max_age):
                    max_age = seconds
        if not (no_cache or no_store) and max_age is None:
            return NO_DIRECTIVES
        return cls(no_cache=no_cache, no_store=no_store, max_age=max_age)

    def accepts(self, stored_at: float) -> bool:
        """Whether an answer stored at `stored_at` (epoch seconds) may be served."""
        return self.max_age is None or time.time() - stored_at <= self.max_age


def _delta_seconds(argument: bytes) -> int | None:
    """A `max-age` argument's seconds (a quoted form too, which recipients should take),
    capped; None when it is no number."""
    digits = argument.strip().strip(b'"')
    if not digits.isdigit():  # bytes: ASCII digits only
        return None
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) > _MAX_AGE_DIGITS:
        return MAX_AGE_CAP
    return min(int(digits), MAX_AGE_CAP)


#: a request without directives the cache reads
NO_DIRECTIVES = CacheControl()
