"""Running the mock on a real socket: inside a caller's event loop (`start_mock`) or as
its own blocking process on uvloop (`run_mock`, behind `recovea mock-provider`)."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from recovea_proxy.mock_provider.app import create_mock_app
from recovea_proxy.mock_provider.controls import MockDefaults

SHUTDOWN_TIMEOUT_S = 1.0
BACKLOG = 1024


async def start_mock(
    host: str, port: int, defaults: MockDefaults | None = None
) -> tuple[web.AppRunner, int]:
    """Start the mock on a real socket (port 0: any free port); return runner and port."""
    runner = web.AppRunner(
        create_mock_app(defaults),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        # A client that goes away cancels its handler: hangs and stalls end with it.
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=BACKLOG)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


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
