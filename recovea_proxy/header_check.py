"""An equivalent, faster check of response header values for uvicorn's httptools
protocol.

uvicorn refuses a response header value holding a control character by searching
every value with the regex `[\\x00-\\x08\\x0a-\\x1f\\x7f]`. The regex engine walks a
value a byte at a time (about 5 ns a byte here), and every non-streamed response
to a workspace carries a ~1 KB `recovea-receipt` header: 4-7 µs a request, more
than the rest of the receipt but its signature. `bytes.translate` marks the same
bytes with a C table lookup in a fraction of that; values shorter than
`_REGEX_BELOW` keep the regex, which is quicker for them.

`install()` swaps the check in only when uvicorn's pattern is exactly the one it
replaces, so a uvicorn that changes its rule keeps its own check.
"""

from __future__ import annotations

import re
from types import ModuleType

#: what uvicorn 0.x refuses in a header value (tab, 0x09, is allowed)
PATTERN = b"[\x00-\x08\x0a-\x1f\x7f]"
_REFUSED = frozenset(range(0x00, 0x09)) | frozenset(range(0x0A, 0x20)) | {0x7F}
# every refused byte maps to 0x00, every other byte to 0x01
_MARK = bytes(0 if byte in _REFUSED else 1 for byte in range(256))
_REGEX_BELOW = 64
#: the bytes uvicorn refuses in a header name (its `HEADER_RE`), as a deletion table
#: for `bytes.translate`
NAME_REFUSED = bytes(range(0x20)) + b'\x7f()<>@,;:[]={} \t\\"'


class ControlCharacterCheck:
    """A drop-in for the compiled pattern: `search(value)` is truthy exactly when the
    regex would find a refused byte in `value`."""

    __slots__ = ("_regex",)

    def __init__(self, regex: re.Pattern[bytes]) -> None:
        self._regex = regex

    def search(self, value: bytes) -> object:
        if len(value) < _REGEX_BELOW:
            return self._regex.search(value)
        return holds_refused_byte(value)


def holds_refused_byte(value: bytes) -> bool:
    """Whether `value` holds a byte uvicorn refuses in a header value (one C pass;
    `http_cycle` checks all of a response's values joined by a tab with it)."""
    # `find`, not `in`: on Python 3.11 `bytes in bytes` first tries the needle as an
    # integer and builds a TypeError for it (~2,000 instructions a test, whatever the
    # lengths); the gateway's byte scans on the request path use `find` for that.
    return value.translate(_MARK).find(b"\x00") >= 0


def holds_refused_name_byte(names: bytes) -> bool:
    """Whether `names` (one header name, or several joined with nothing between) holds
    a byte uvicorn refuses in a header name (one C pass)."""
    return len(names.translate(None, NAME_REFUSED)) != len(names)


def install(protocol_module: ModuleType) -> bool:
    """Replace `protocol_module.HEADER_VALUE_RE` when it is uvicorn's known regex;
    True when it was replaced (or already had been)."""
    current = getattr(protocol_module, "HEADER_VALUE_RE", None)
    if isinstance(current, ControlCharacterCheck):
        return True
    if not isinstance(current, re.Pattern) or current.pattern != PATTERN or current.flags:
        return False
    setattr(protocol_module, "HEADER_VALUE_RE", ControlCharacterCheck(current))  # noqa: B010
    return True
