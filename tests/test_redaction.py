"""No key, in full, ever reaches a log line (DESIGN.md, Secrets).

The redaction processor is the backstop for accidents, so these tests cause the
accidents: the processor on its own (every key shape, anywhere in a value, nested,
inside an exception); a process whose logging `configure_logging` set up (a
traceback, an exception field, standard-library and asyncio records, in both log
formats); and real gateway processes (a KMS error that names a pasted key, logged
by uvicorn; a provider answer that echoes the caller's key).

The request line is not here: it skips the processor because its strings are
cleaned where the record is built (`recovea_proxy.clean`); test_observability.py
holds a key pasted into a caller's model or tags to that.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import multidict
import orjson
import pytest

from recovea_proxy.observability.redact import redact_processor
from tests.conftest import FAKE_OPENAI_KEY
from tests.redaction_support import emit
from tests.support import GATEWAY_LOGS, Gateway, Postgres, free_port

#: one key of every shape the redaction knows, each with its own last four
KEYS = {
    "anthropic": "sk-ant-api03-Hq8ZfK2nR5tW1xYbV7mC3pL9sD4gJ0eA-x_AnT1",
    "openai_project": "sk-proj-Zq3J8x1RkD5mV0aLpN7uYc2Wf9Tb4HsE_PrJ2",
    "openrouter": "sk-or-v1-5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1cOrT3",
    "openai_service_account": "sk-svcacct-Wf9Tb4HsEZq3J8x1RkD5mV0aLpN7uYc2-SvC4",
    "openai_plain": "sk-Zq3J8x1RkD5mV0aLpN7uYc2Wf9Tb4HsEpLn5",
    "rcv_live": "rcv_live_q8ZfK2nR5tW1xYbV7mC3pL9sD4gJ0eAHq8ZfK2nLv6x",
    "rcv_test": "rcv_test_V7mC3pL9sD4gJ0eAHq8ZfK2nR5tW1xYbq8ZfK2nTs7y",
}
#: a bearer token of no known key shape (an OAuth access token, a JWT)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3czEifQ.c2lnbmF0dXJl-_x+/Wt8Q="


def masked(key: str) -> str:
    """What the log shows of `key`: `****` and its last four characters."""
    return "****" + key[-4:]


def redacted(event: dict[str, Any]) -> dict[str, Any]:
    return redact_processor(None, "warning", event)


class UpstreamRefused(Exception):
    """An error from a library whose message quotes the request it refused."""


# The processor on its own


@pytest.mark.parametrize("shape", sorted(KEYS))
@pytest.mark.parametrize(
    "template",
    ["{}", "{} was refused", "the key {} was refused", "refused: {}"],
    ids=["alone", "start", "middle", "end"],
)
def test_every_key_shape_is_masked_wherever_it_stands(shape: str, template: str) -> None:
    """A key of any known shape, alone or at the start, middle or end of a string,
    is replaced by `****` and its last four characters; the rest of the text stays."""
    key = KEYS[shape]
    event = {"event": "upstream_refused", "detail": template.format(key)}
    expected = {"event": "upstream_refused", "detail": template.format(masked(key))}
    assert expected == redacted(event)


@pytest.mark.parametrize(
    "scheme", ["Bearer ", "bearer ", "BEARER ", "bEaReR ", "Bearer  ", "Bearer\t"]
)
def test_a_bearer_token_is_masked_whatever_the_case_of_the_scheme(scheme: str) -> None:
    """The token after `Bearer` is masked however the scheme is spelled (HTTP auth
    schemes are case-insensitive) and however it is separated, even when the token
    has no known key shape; the scheme itself stays readable."""
    event = {"event": f"Authorization: {scheme}{JWT}"}
    assert {"event": f"Authorization: {scheme}{masked(JWT)}"} == redacted(event)


def test_several_keys_in_one_value_are_each_masked() -> None:
    """Every key in a value is masked, not only the first."""
    event = {
        "event": "fallback_exhausted",
        "tried": f"{KEYS['anthropic']}, then {KEYS['openrouter']}, then Bearer {JWT}, "
        f"then {KEYS['rcv_live']}",
    }
    expected = {
        "event": "fallback_exhausted",
        "tried": f"{masked(KEYS['anthropic'])}, then {masked(KEYS['openrouter'])}, "
        f"then Bearer {masked(JWT)}, then {masked(KEYS['rcv_live'])}",
    }
    assert expected == redacted(event)


def test_keys_inside_nested_dicts_lists_and_tuples_are_masked() -> None:
    """Keys are found at any depth of dicts, lists and tuples, in dict keys too
    (a tuple is rendered as a list anyway)."""
    event = {
        "event": "retry",
        "attempts": [
            {"headers": {"authorization": f"Bearer {JWT}", "x-api-key": KEYS["anthropic"]}},
            (KEYS["openai_project"], [KEYS["rcv_test"], 3]),
        ],
        "by_key": {KEYS["openai_plain"]: "refused"},
        "keys": (KEYS["openai_service_account"],),
    }
    expected = {
        "event": "retry",
        "attempts": [
            {
                "headers": {
                    "authorization": f"Bearer {masked(JWT)}",
                    "x-api-key": masked(KEYS["anthropic"]),
                }
            },
            [masked(KEYS["openai_project"]), [masked(KEYS["rcv_test"]), 3]],
        ],
        "by_key": {masked(KEYS["openai_plain"]): "refused"},
        "keys": [masked(KEYS["openai_service_account"])],
    }
    assert expected == redacted(event)


@pytest.mark.parametrize(
    "value",
    [
        UpstreamRefused(f"401 for {{'Authorization': 'Bearer {KEYS['openai_project']}'}}"),
        multidict.CIMultiDict({"Authorization": f"Bearer {KEYS['openai_project']}"}),
        f"Authorization: Bearer {KEYS['openai_project']}".encode(),
    ],
    ids=["exception", "header_mapping", "bytes"],
)
def test_a_key_inside_an_object_the_renderer_would_print_is_masked(value: object) -> None:
    """A field holding an exception, a header mapping or bytes is printed by the
    renderer with `repr`: that text is what gets masked, at the top level and nested."""
    key = KEYS["openai_project"]
    shown = repr(value).replace(key, masked(key))
    event = {"event": "upstream_refused", "error": value, "nested": [{"error": value}]}
    expected = {"event": "upstream_refused", "error": shown, "nested": [{"error": shown}]}
    assert expected == redacted(event)


def test_a_line_without_keys_is_left_as_it_was() -> None:
    """Nothing is masked or converted in a line that holds no key: numbers, None,
    ordinary text (also text with an `sk-` or `bearer` that starts no key) and
    objects stay what they were."""
    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    error = UpstreamRefused("connection reset by peer")
    event: dict[str, Any] = {
        "event": "maintenance_done",
        "rows": 12,
        "ratio": 0.5,
        "ok": True,
        "kid": None,
        "note": "task sk- list; the bearer of bad news",
        "summary": {"pruned": [1, 2], "jobs": ["rollup"]},
        "at": when,
        "error": error,
    }
    result = redacted(dict(event))
    assert event == result
    assert result["at"] is when
    assert result["error"] is error


# A process whose logging configure_logging set up


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_traceback_the_gateway_logs_is_masked(log_format: str) -> None:
    """`log.exception(...)` (the gateway's `request_failed`): the traceback is written
    with the exception's message, and a key in that message is masked."""
    key = KEYS["openai_project"]
    output = emit(log_format, "exception", key)
    message = f"401 for request with headers {{'Authorization': 'Bearer {masked(key)}'}}"
    assert f"UpstreamRefused: {message}" in output
    assert key not in output


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_an_exception_given_as_a_field_is_masked(log_format: str) -> None:
    """`log.warning(..., error=exc)`: the exception is printed with its message, the
    key in it masked."""
    key = KEYS["anthropic"]
    output = emit(log_format, "exception_field", key)
    assert f"Bearer {masked(key)}" in output
    assert "UpstreamRefused(" in output
    assert key not in output


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_standard_library_record_is_masked(log_format: str) -> None:
    """A record from a standard-library logger (aiohttp's, uvicorn's), the key in the
    message's arguments: the written message holds the key masked."""
    key = KEYS["rcv_live"]
    output = emit(log_format, "stdlib_message", key)
    assert f"retrying with Authorization: Bearer {masked(key)}" in output
    assert key not in output


@pytest.mark.parametrize("scenario", ["stdlib_exc_info", "asyncio_callback"])
@pytest.mark.parametrize("log_format", ["json", "console"])
def test_an_exception_on_a_standard_library_record_is_masked(
    log_format: str, scenario: str
) -> None:
    """uvicorn's "Exception in ASGI application" and asyncio's "Exception in callback"
    carry the exception on the record (`exc_info`): it is written as a plain
    traceback (no local variables), the key in its message masked."""
    key = KEYS["openrouter"]
    output = emit(log_format, scenario, key)
    assert "Traceback (most recent call last):" in output
    assert f"'Authorization': 'Bearer {masked(key)}'" in output
    assert key not in output
    if log_format == "json":
        for line in output.splitlines():
            orjson.loads(line)


# Real gateway processes


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    """moto's KMS in server mode, over real HTTP: it names an unknown key id in its error,
    as AWS does."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def unstarted_database() -> Iterator[Postgres]:
    """A database no gateway has started on (no receipt signing key yet, so startup
    asks the master key for one). A startup that fails there leaves it so."""
    server = Postgres()
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_kms_error_naming_a_pasted_key_is_masked_in_uvicorns_log(
    log_format: str, kms_endpoint: str, unstarted_database: Postgres, workdir: Path
) -> None:
    """An operator pastes a provider key into RECOVEA_KMS_KEY_ID. KMS refuses it with
    an error that names it; the failed startup's traceback is logged by uvicorn
    through the standard library. The gateway exits, and its output shows the key
    masked, never in full."""
    log_path = workdir / f"kms-pasted-{log_format}.log"
    GATEWAY_LOGS.append(log_path)  # also for the session's leak check (conftest)
    env = {
        **os.environ,
        "RECOVEA_HOST": "127.0.0.1",
        "RECOVEA_PORT": str(free_port()),
        "RECOVEA_LOG_FORMAT": log_format,
        "RECOVEA_DATA_DIR": str(workdir / f"kms-pasted-{log_format}"),
        "RECOVEA_DATABASE_URL": unstarted_database.url,
        "RECOVEA_KMS_KEY_ID": FAKE_OPENAI_KEY,
        "AWS_ENDPOINT_URL_KMS": kms_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with log_path.open("wb") as log:
        done = subprocess.run(
            [sys.executable, "-m", "recovea_proxy", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    output = log_path.read_text()
    assert done.returncode != 0, output
    assert f"Invalid keyId {masked(FAKE_OPENAI_KEY)}" in output
    assert "Application startup failed." in output
    assert FAKE_OPENAI_KEY not in output


def test_a_provider_answer_echoing_the_key_is_never_logged_in_full(gateway: Gateway) -> None:
    """A provider that echoes the caller's key — in its body (the mock's echo route
    mirrors the request headers) or in a string the gateway does record (the finish
    reason, as a provider's error text might) — puts it in no log line in full: the
    recorded string holds it masked."""
    key = "sk-proj-EchoedBackByTheProvider0123456789EcH0"
    auth = {"authorization": f"Bearer {key}"}
    echoed = httpx.post(f"{gateway.url}/v1/_mock/echo", content=b"{}", headers=auth)
    assert echoed.json()["headers"]["authorization"] == f"Bearer {key}"
    refusal = orjson.dumps(f"Incorrect API key provided: {key}").decode()
    answered = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        headers={**auth, "x-mock-finish-reason": refusal},
    )
    assert answered.status_code == 200
    gateway.record(echoed.headers["x-request-id"])
    line = gateway.record(answered.headers["x-request-id"])
    assert line["finish_reason"] == f"Incorrect API key provided: {masked(key)}"
    assert key not in gateway.log_text()
