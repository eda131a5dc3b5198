"""The `recovea` command line. Flags override the matching RECOVEA_* variables."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from recovea_proxy import __version__
from recovea_proxy.config import ConfigError, Settings
from recovea_proxy.observability.redact import redact_text


def _serve(args: argparse.Namespace) -> int:
    if args.host:
        os.environ["RECOVEA_HOST"] = args.host
    if args.port is not None:
        os.environ["RECOVEA_PORT"] = str(args.port)
    if args.passthrough:
        os.environ["RECOVEA_PASSTHROUGH"] = args.passthrough
    settings = Settings.from_env()
    from recovea_proxy.server import serve

    serve(settings, workers=args.workers)
    if args.workers > 1 and settings.database_url is None:
        # Each worker releases the embedded Postgres as it stops, but workers that stop
        # together each see the others still using it: the supervisor checks last.
        import asyncio

        from recovea_proxy.observability.logging import configure_logging
        from recovea_proxy.store.embedded import release

        configure_logging(settings.log_format, settings.log_level)
        asyncio.run(release(settings.data_dir))
    return 0


def _mock_provider(args: argparse.Namespace) -> int:
    from recovea_proxy.mock_provider import defaults_from_args, run_mock

    run_mock(args.host, args.port, defaults_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every `recovea` command."""
    from recovea_proxy.mock_provider import add_cli_arguments

    parser = argparse.ArgumentParser(prog="recovea", description="Recovea LLM API gateway.")
    parser.add_argument("--version", action="version", version=f"recovea {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="listen address (RECOVEA_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (RECOVEA_PORT, default 8080)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--passthrough", choices=("on", "off"), help="forward callers' own provider keys"
    )
    serve.set_defaults(run=_serve)

    mock = commands.add_parser("mock-provider", help="run a local OpenAI/Anthropic mock")
    mock.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    mock.add_argument("--port", type=int, default=9000, help="listen port (default 9000)")
    add_cli_arguments(mock)
    mock.set_defaults(run=_mock_provider)

    from recovea_proxy.admin.commands import add_commands
    from recovea_proxy.meter.verify_cli import add_command as add_verify_receipt

    add_commands(commands)
    add_verify_receipt(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `recovea` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        # The value may be a key pasted into the wrong variable: never print it whole.
        print(f"recovea: configuration error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    return code
