"""`python -m recovea_proxy.mock_provider --port N`."""

from __future__ import annotations

import argparse

from recovea_proxy.mock_provider import add_cli_arguments, defaults_from_args, run_mock


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m recovea_proxy.mock_provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    add_cli_arguments(parser)
    args = parser.parse_args()
    run_mock(args.host, args.port, defaults_from_args(args))


if __name__ == "__main__":
    main()
