"""Write requirements.lock: the gateway's runtime dependencies (pyproject's
`dependencies`, with everything they require, for Linux and this Python) pinned to
the versions installed in the running environment.

    .venv/bin/python deploy/lock.py > requirements.lock

The Dockerfile installs from the lock, then the package itself with --no-deps.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def runtime_closure(requirements: list[str]) -> dict[str, str]:
    """Canonical name -> installed version, for `requirements` and what they require."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(line) for line in requirements if _applies(Requirement(line), "")]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        pinned[key[0]] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if any(_applies(sub, extra) for extra in ["", *req.extras]):
                todo.append(sub)
    return pinned


def _applies(req: Requirement, extra: str) -> bool:
    """Whether `req` is required here (Linux, this Python), given `extra`."""
    if req.marker is None:
        return extra == ""
    return bool(req.marker.evaluate({**default_environment(), "extra": extra}))


def main() -> None:
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    pinned = runtime_closure(pyproject["project"]["dependencies"])
    print("# Runtime dependencies of recovea-proxy, pinned (deploy/lock.py writes this file).")
    print(f"# Resolved for Linux, Python {sys.version_info.major}.{sys.version_info.minor}.")
    for name in sorted(pinned):
        print(f"{name}=={pinned[name]}")


if __name__ == "__main__":
    main()
