"""Runs the `recovea` CLI of another checkout of the project (a git worktree), so a
bench run can measure an older commit's gateway beside the current one.

    python -m bench.at_ref /path/to/worktree serve --host 127.0.0.1 --port 8081
"""

from __future__ import annotations

import sys


def main() -> int:
    root, *args = sys.argv[1:]
    sys.path.insert(0, root)
    import recovea_proxy
    from recovea_proxy.cli import main as cli_main

    where = recovea_proxy.__file__ or ""
    if not where.startswith(root):
        raise SystemExit(f"recovea_proxy was imported from {where}, not from {root}")
    sys.argv = ["recovea", *args]
    return cli_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
