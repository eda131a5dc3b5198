"""A local OpenAI-, Anthropic- and OpenRouter-compatible provider for the quickstart,
the tests and the bench: real wire formats, usage fields, pacing and faults."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from recovea_proxy.mock_provider.app import create_mock_app
from recovea_proxy.mock_provider.controls import MockDefaults, add_cli_arguments, defaults_from_args

__all__ = [
    "MockDefaults",
    "add_cli_arguments",
    "create_mock_app",
    "defaults_from_args",
    "run_mock",
    "start_mock",
]


async def start_mock(
    host: str, port: int, defaults: MockDefaults | None = None
) -> tuple[web.AppRunner, int]:
    """Start the mock on a real socket (port 0: any free port); return runner and port."""
    runner = web.AppRunner(
        create_mock_app(defaults), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


def run_mock(host: str, port: int, defaults: MockDefaults) -> None:
    """Run the mock on uvloop until SIGINT or SIGTERM."""
    import uvloop

    async def main() -> None:
        runner, bound = await start_mock(host, port, defaults)
        print(f"mock provider listening on http://{host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    uvloop.run(main())
