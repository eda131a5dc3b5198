"""Compiled copies of the levers' hot modules, and when the gateway runs them.

Every shareable request runs the cache key, the chain, the flight and the memory
store (`COMPILED`). Interpreted, they cost a JSON miss ~0.064x the floor proxy's CPU
(`bench/README.md`, "Compiled lever modules"); compiled with mypyc (part of mypy)
into C extensions, ~0.046x. The sources stay the reference: the compiled copies are
the same code, type-checked (`mypy --strict`) and compiled as it is.

`recovea compile` (run by `make` after installing, and again whenever a source
changes) builds them into `_compiled/` beside the package, with a stamp: the SHA-256
of every source of the package and the interpreter's version. `recovea_proxy.levers`
calls `activate` as it is imported: it puts the compiled copies first on the
package's path only when the stamp matches the sources as they are now. A copy built
from other sources (an edit since, a mutant) is never run: the interpreted modules
are, as they are when nothing was built (no C compiler) or `RECOVEA_COMPILED=off`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: the modules compiled: every shareable request runs them
COMPILED = (
    "recovea_proxy/levers/cache_key.py",
    "recovea_proxy/levers/cache_store.py",
    "recovea_proxy/levers/flights.py",
    "recovea_proxy/levers/chain.py",
    "recovea_proxy/levers/cache.py",
)
#: the compiled copies' directory, beside the package's sources
PACKAGE = Path(__file__).resolve().parent
DIRECTORY = PACKAGE / "_compiled"
_STAMP = "stamp.json"
#: mypyc's shared library of the compiled modules (a top-level module)
_GROUP = "recovea_levers"

#: whether this process runs the compiled copies (set by `activate`)
active = False


def stamp(package: Path = PACKAGE) -> dict[str, str]:
    """What compiled copies must have been built from to be run: every source of the
    package (a compiled module reads the others' types), and the interpreter."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if DIRECTORY.name in path.parts:
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return {
        "sources": digest.hexdigest(),
        "python": sys.version,
        "suffix": str(sysconfig.get_config_var("EXT_SUFFIX")),
    }


def activate(levers_path: list[str], directory: Path = DIRECTORY) -> bool:
    """Put the compiled copies first on `recovea_proxy.levers`' path (`levers_path`,
    its `__path__`) when they were built from the sources as they are now; False when
    they are not run (not built, built from other sources, or `RECOVEA_COMPILED=off`)."""
    global active
    if os.environ.get("RECOVEA_COMPILED", "on") == "off":
        return False
    try:
        built = json.loads((directory / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    if built != stamp():
        return False
    levers_path.insert(0, str(directory / "recovea_proxy" / "levers"))
    if str(directory) not in sys.path:
        sys.path.append(str(directory))  # mypyc's shared library
    active = True
    return True


def build(directory: Path = DIRECTORY) -> None:
    """Compile `COMPILED` with mypyc into `directory`, stamped; raises `BuildFailed`
    when mypyc, setuptools or a C compiler is missing, or compiling fails."""
    missing = cannot_build()
    if missing is not None:
        raise BuildFailed(missing)
    from mypyc.build import mypycify
    from setuptools import Distribution

    before = stamp()
    with tempfile.TemporaryDirectory(prefix="recovea-compile-") as scratch:
        out = Path(scratch) / "out"
        log = Path(scratch) / "log"
        cwd = os.getcwd()
        os.chdir(PACKAGE.parent)  # mypy type-checks the package as it is imported
        try:
            with _output_to(log):  # mypyc's and the compiler's lines: shown on failure only
                modules = mypycify(
                    list(COMPILED), opt_level="3", group_name=_GROUP, target_dir=f"{scratch}/c"
                )
                dist = Distribution({"name": "recovea-compiled", "ext_modules": modules})
                dist.script_args = [
                    "build_ext",
                    "--build-lib",
                    str(out),
                    "--build-temp",
                    f"{scratch}/temp",
                ]
                dist.parse_command_line()
                dist.run_commands()
        except (Exception, SystemExit) as exc:  # a failed compile is reported, not raised on
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise BuildFailed(f"compiling failed: {exc}\n{tail}") from None
        finally:
            os.chdir(cwd)
        if stamp() != before:
            raise BuildFailed("a source changed while compiling")
        (out / _STAMP).write_text(json.dumps(before))
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(out, directory)


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr, the compiler's too (file descriptors 1 and 2),
    into `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log.open("wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def cannot_build() -> str | None:
    """What this machine lacks to compile (mypyc, setuptools, a C compiler, Python's
    headers), or None."""
    for module in ("mypyc", "setuptools"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (the `test` extra has both)"
    compiler = str(sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers}: Debian's python3-dev)"
    return None


class BuildFailed(Exception):
    """The compiled copies could not be built (the interpreted modules run)."""


def main(argv: list[str] | None = None) -> int:
    """`recovea compile`: build, and say where (or why not)."""
    try:
        build()
    except BuildFailed as exc:
        print(f"recovea compile: {exc}; the levers run interpreted", file=sys.stderr)
        return 1
    print(f"recovea compile: {len(COMPILED)} lever modules compiled into {DIRECTORY}")
    return 0
