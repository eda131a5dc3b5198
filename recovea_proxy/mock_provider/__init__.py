"""A local OpenAI-, Anthropic- and OpenRouter-compatible provider for the quickstart,
the tests and the bench: real wire formats, usage fields, pacing and faults.

    create_mock_app(defaults)        the aiohttp application
    start_mock(host, port, defaults) serve it in the running loop -> (runner, port)
    run_mock(host, port, defaults)   serve it until SIGINT/SIGTERM (blocking, uvloop)

Per-request `x-mock-*` headers override the defaults and inject faults; see
docs/api.md and `controls.py`.
"""

from __future__ import annotations

from recovea_proxy.mock_provider.app import create_mock_app
from recovea_proxy.mock_provider.controls import MockDefaults, add_cli_arguments, defaults_from_args
from recovea_proxy.mock_provider.server import run_mock, start_mock

__all__ = [
    "MockDefaults",
    "add_cli_arguments",
    "create_mock_app",
    "defaults_from_args",
    "run_mock",
    "start_mock",
]
