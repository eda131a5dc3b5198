"""Log lines with a key in them, from a process whose logging `configure_logging` set up.

`python -m tests.redaction_support FORMAT SCENARIO KEY` configures logging exactly as
the gateway does (`RECOVEA_LOG_FORMAT` json or console) and writes one scenario's
line to stdout. Each scenario is a way a key could reach a log line by accident:

| scenario             | what logs the key |
| `exception`          | the gateway's own `log.exception(...)`: the key is in the traceback |
| `exception_field`    | a structlog field holding an exception object (`error=exc`) |
| `stdlib_message`     | a standard-library logger, the key in the message's arguments |
| `stdlib_exc_info`    | uvicorn's "Exception in ASGI application" (`exc_info=` an exception) |
| `asyncio_callback`   | asyncio's own handler for a callback that raised |

Run as a separate process so the test run's own logging is left as it was.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import structlog

from recovea_proxy.observability.logging import configure_logging


class UpstreamRefused(Exception):
    """An error from a library whose message quotes the request it refused."""


def _refusal(key: str) -> UpstreamRefused:
    return UpstreamRefused(f"401 for request with headers {{'Authorization': 'Bearer {key}'}}")


def exception(key: str) -> None:
    log = structlog.get_logger("recovea")
    try:
        raise _refusal(key)
    except UpstreamRefused:
        log.exception("request_failed", request_id="req_1")


def exception_field(key: str) -> None:
    structlog.get_logger("recovea").warning("upstream_refused", error=_refusal(key))


def stdlib_message(key: str) -> None:
    logging.getLogger("aiohttp.client").warning("retrying with Authorization: Bearer %s", key)


def stdlib_exc_info(key: str) -> None:
    try:
        raise _refusal(key)
    except UpstreamRefused as exc:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=exc)


def asyncio_callback(key: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def fail() -> None:
            raise _refusal(key)

        loop.call_soon(fail)
        # Runs after `fail` (callbacks run in order), once asyncio has logged it.
        loop.call_soon(done.set_result, None)
        await done

    asyncio.run(main())


SCENARIOS: dict[str, Callable[[str], None]] = {
    "exception": exception,
    "exception_field": exception_field,
    "stdlib_message": stdlib_message,
    "stdlib_exc_info": stdlib_exc_info,
    "asyncio_callback": asyncio_callback,
}


def emit(log_format: str, scenario: str, key: str) -> str:
    """What a process configured for `log_format` writes for `scenario` with `key`."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.redaction_support", log_format, scenario, key],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr, done.stderr
    return done.stdout


if __name__ == "__main__":
    log_format, scenario, pasted = sys.argv[1:4]
    configure_logging(log_format)
    SCENARIOS[scenario](pasted)
