"""The mutation run's result per module, checked against the reviewed survivors.

`make mutate` runs this after `mutmut run`: it reads mutmut's results under
`mutants/`, prints one line per mutated module (mutants, killed, survived, no
tests, timeouts, kill rate), and compares the survivors with the ones explained in
`mutation-survivors.md`. It exits 1 when a survivor is not explained there (a test
to write, or a reason to record), so a regression in the tests' strength is seen
the day it happens. Explained mutants that no longer survive are listed too, so the
file does not go stale.

A name there may end in `*` (`...x_set_price__mutmut_*`): every mutant of that
function is explained at once. Keep that for functions the file says are out of the
review's scope; everything else is listed one mutant at a time.

    python -m tests.mutation_report [--survivors mutation-survivors.md]
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
import tomllib
from collections import Counter
from pathlib import Path

import orjson

#: mutmut's exit codes, as its `stats.py` reads them
_STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    # SIGKILL: a mutant that never ends (an endless loop) is killed with its run
    -9: "timeout",
    37: "type check",
}
_NAME = re.compile(r"recovea_proxy\.[\w.\u01c1]+__mutmut_(?:\d+|\*)")


def status_of(code: int | None) -> str:
    if code is None:
        return "not checked"
    return _STATUS.get(code, "suspicious")


def modules(root: Path) -> list[str]:
    """The modules `[tool.mutmut] only_mutate` names, in its order."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [str(path) for path in config["only_mutate"]]


def results(root: Path, module: str) -> dict[str, str]:
    """Mutant name → status for one module; empty when it was not run."""
    meta = root / "mutants" / f"{module}.meta"
    if not meta.exists():
        return {}
    codes = orjson.loads(meta.read_bytes())["exit_code_by_key"]
    return {name: status_of(code) for name, code in codes.items()}


def explained(path: Path) -> set[str]:
    """The mutant names the survivors file explains."""
    return set(_NAME.findall(path.read_text())) if path.exists() else set()


def covers(reviewed: set[str], name: str) -> bool:
    """Whether the survivors file explains `name` (by name, or by its function's `*`)."""
    return name in reviewed or any(
        pattern.endswith("*") and fnmatch.fnmatchcase(name, pattern) for pattern in reviewed
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", default="mutation-survivors.md")
    parser.add_argument("--root", default=".")
    args = parser.parse_args(argv)
    root = Path(args.root)
    reviewed = explained(root / args.survivors)

    header = f"{'module':44} {'mutants':>7} {'killed':>6} {'surv.':>5} {'no test':>7}"
    print(f"{header} {'timeout':>7} {'kill rate':>9}")
    unexplained: list[str] = []
    surviving: set[str] = set()
    stale: list[str] = []
    totals: Counter[str] = Counter()
    for module in modules(root):
        found = {n: st for n, st in results(root, module).items() if st != "not checked"}
        if not found:
            print(f"{module:44} (not run)")
            continue
        counts = Counter(found.values())
        totals.update(counts)
        total = len(found)
        caught = counts["killed"] + counts["timeout"]
        print(
            f"{module:44} {total:7} {counts['killed']:6} {counts['survived']:5}"
            f" {counts['no tests']:7} {counts['timeout']:7} {100 * caught / total:8.1f}%"
        )
        for name, status in found.items():
            if status in ("survived", "no tests", "suspicious"):
                surviving.add(name)
                if not covers(reviewed, name):
                    unexplained.append(f"{status:11} {name}")
        prefix = module.removesuffix(".py").replace("/", ".") + "."
        stale += [
            n
            for n in reviewed
            if n.startswith(prefix) and not any(fnmatch.fnmatchcase(s, n) for s in surviving)
        ]
    grand = sum(totals.values())
    if grand:
        caught = totals["killed"] + totals["timeout"]
        print(
            f"{'all':44} {grand:7} {totals['killed']:6} {totals['survived']:5}"
            f" {totals['no tests']:7} {totals['timeout']:7} {100 * caught / grand:8.1f}%"
        )
    print("(kill rate: killed or timed out, of the mutants run)")
    if stale:
        print(f"\n{len(stale)} mutants explained in {args.survivors} no longer survive:")
        print("\n".join(f"  {name}" for name in sorted(stale)))
    if unexplained:
        print(f"\n{len(unexplained)} survivors not explained in {args.survivors}:")
        print("\n".join(f"  {line}" for line in sorted(unexplained)))
        print("Kill each with a test, or explain it there (see `mutmut show NAME`).")
        return 1
    print(f"\nEvery survivor is explained in {args.survivors}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
