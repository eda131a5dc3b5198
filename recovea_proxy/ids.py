"""Random hex identifiers for requests and traces, without a system call each.

`os.urandom` is read `POOL_BYTES` at a time and handed out 16 bytes per id: the
same randomness as one `os.urandom(16)` per id, one getrandom(2) per 256 ids. A
forked child drops the pool it inherited, so parent and child never hand out the
same id. Called from the event loop's thread only (the pool has no lock).
"""

from __future__ import annotations

import os

POOL_BYTES = 4096
_ID_BYTES = 16


class _IdPool:
    __slots__ = ("_pool", "_used")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pool = b""
        self._used = POOL_BYTES

    def new_id(self) -> str:
        """32 random hex characters (128 bits)."""
        used = self._used
        if used >= POOL_BYTES:
            self._pool = os.urandom(POOL_BYTES)
            used = 0
        self._used = used + _ID_BYTES
        return self._pool[used : used + _ID_BYTES].hex()


_POOL = _IdPool()
os.register_at_fork(after_in_child=_POOL.reset)
new_id = _POOL.new_id
