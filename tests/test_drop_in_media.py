"""Usage beyond chat through the official OpenAI SDK: image generations, audio
transcriptions (whole and streamed) and an embeddings answer too large to buffer are
metered from the usage the provider reported — NULL where it reported none — and reach
the client byte for byte as they would directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from recovea_proxy.pipe import _BUFFER_JSON_MAX
from tests.conftest import SdkClients
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, MockServer, without_receipt

TOKENS = {"x-mock-input-tokens": "41", "x-mock-output-tokens": "73"}
AUDIO = ("clip.wav", b"RIFF" + bytes(48_000))
#: inputs of 3072 floats, indented: about 49 KB each
LARGE_INPUTS = 420


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "media-usage")


def clients(
    sdk: SdkClients, gateway: Gateway, mock: MockServer, tenant: Tenant
) -> tuple[openai.OpenAI, openai.OpenAI]:
    """(through the gateway on the tenant's rcv_ key, straight to the mock)."""
    return sdk.openai(f"{gateway.url}/v1", tenant.key), sdk.openai(f"{mock.url}/v1")


def row(gateway: Gateway, tenant: Tenant, request_id: str) -> dict[str, Any]:
    return stored(gateway, tenant, "requests", request_id)


def tokens(found: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    return (
        found["input_tokens"],
        found["output_tokens"],
        found["cached_tokens"],
        found["reasoning_tokens"],
    )


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-image-1", (41, 73)), ("dall-e-3", (None, None))]
)
def test_image_generation_is_metered_from_its_usage(
    sdk: SdkClients,
    gateway: Gateway,
    mock: MockServer,
    tenant: Tenant,
    model: str,
    expected: tuple[int | None, int | None],
) -> None:
    """gpt-image models report input and output tokens, which the row holds; dall-e
    reports none, so the row's counts are NULL. The body is the direct one."""
    via, direct = clients(sdk, gateway, mock, tenant)
    raw = via.images.with_raw_response.generate(
        model=model, prompt="a lighthouse", extra_headers=TOKENS
    )
    plain = direct.images.with_raw_response.generate(
        model=model, prompt="a lighthouse", extra_headers=TOKENS
    )
    assert raw.content == plain.content
    image = raw.parse()
    assert image.data and image.data[0].b64_json
    found = row(gateway, tenant, raw.headers["x-request-id"])
    assert tokens(found) == (*expected, None, None)
    assert (found["baseline_model"], found["success"]) == (model, True)
    assert raw.headers["recovea-receipt"]


def test_streamed_image_generation_is_metered_from_its_completed_event(
    sdk: SdkClients, gateway: Gateway, mock: MockServer, tenant: Tenant
) -> None:
    """A streamed generation's usage follows a 200 KB image in its last event; the
    stream reaches the client as it left the provider, the receipt line after it."""
    via, direct = clients(sdk, gateway, mock, tenant)
    kwargs: dict[str, Any] = {
        "model": "gpt-image-1",
        "prompt": "a harbour",
        "stream": True,
        "partial_images": 2,
        "extra_headers": {**TOKENS, "x-mock-chunks": "200"},
    }
    with via.images.with_streaming_response.generate(**kwargs) as response:
        request_id = response.headers["x-request-id"]
        received = response.read()
    with direct.images.with_streaming_response.generate(**kwargs) as response:
        sent = response.read()
    assert len(sent) > 3 * 200_000
    assert without_receipt(received) == sent
    found = row(gateway, tenant, request_id)
    assert tokens(found) == (41, 73, None, None)
    assert found["success"] is True
    events = list(via.images.generate(**kwargs))
    assert [event.type for event in events][-1] == "image_generation.completed"


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-4o-transcribe", (41, 73)), ("gpt-4o-mini-transcribe", (41, 73)), ("whisper-1", None)],
)
def test_transcription_is_metered_from_its_usage(
    sdk: SdkClients,
    gateway: Gateway,
    mock: MockServer,
    tenant: Tenant,
    model: str,
    expected: tuple[int, int] | None,
) -> None:
    """A multipart transcription: the token models' input and output tokens are the
    row's; whisper-1 reports seconds of audio, not tokens, so its counts are NULL
    (never a count made from the seconds). The row's model is the form's `model`."""
    via, direct = clients(sdk, gateway, mock, tenant)
    raw = via.audio.transcriptions.with_raw_response.create(
        model=model, file=AUDIO, extra_headers=TOKENS
    )
    plain = direct.audio.transcriptions.with_raw_response.create(
        model=model, file=AUDIO, extra_headers=TOKENS
    )
    assert raw.content == plain.content
    assert "48004 audio bytes" in raw.parse().text
    found = row(gateway, tenant, raw.headers["x-request-id"])
    assert tokens(found) == (*(expected or (None, None)), None, None)
    assert found["success"] is True
    assert found["baseline_model"] == model
    assert mock.requests()[-1]["body"]["model"] == model


def test_streamed_transcription_is_metered_from_its_done_event(
    sdk: SdkClients, gateway: Gateway, mock: MockServer, tenant: Tenant
) -> None:
    """With stream=true the usage comes in the final `transcript.text.done` event; the
    stream reaches the client as it left the provider, the receipt line after it."""
    via, direct = clients(sdk, gateway, mock, tenant)
    kwargs: dict[str, Any] = {
        "model": "gpt-4o-transcribe",
        "file": AUDIO,
        "stream": True,
        "extra_headers": TOKENS,
    }
    with via.audio.transcriptions.with_streaming_response.create(**kwargs) as response:
        request_id = response.headers["x-request-id"]
        received = response.read()
    with direct.audio.transcriptions.with_streaming_response.create(**kwargs) as response:
        sent = response.read()
    assert without_receipt(received) == sent
    events = list(via.audio.transcriptions.create(**kwargs))
    assert events[-1].type == "transcript.text.done"
    found = row(gateway, tenant, request_id)
    assert tokens(found) == (41, 73, None, None)
    assert found["success"] is True
    logged = gateway.record(request_id)
    assert (logged["baseline_model"], logged["stream"]) == ("gpt-4o-transcribe", True)


def large_embeddings(client: openai.OpenAI, **headers: str) -> Any:
    return client.embeddings.with_raw_response.create(
        model="text-embedding-3-large",
        input=[f"passage {i}" for i in range(LARGE_INPUTS)],
        dimensions=3072,
        encoding_format="float",
        extra_headers={"x-mock-pretty": "1", "x-mock-input-tokens": "98765", **headers},
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_embeddings_too_large_to_buffer_are_metered_from_their_tail(
    sdk: SdkClients, gateway: Gateway, mock: MockServer, tenant: Tenant, chunked: bool
) -> None:
    """A pretty-printed embeddings answer over the buffering limit (announced by its
    content-length, or chunked and found out on the way) streams through unchanged and
    its usage, at the end of the body, is the row's. Its headers went out before the
    body's end, so its receipt is in the ledger, not in a header."""
    via, direct = clients(sdk, gateway, mock, tenant)
    headers = {"x-mock-chunked": "1"} if chunked else {}
    raw = large_embeddings(via, **headers)
    plain = large_embeddings(direct, **headers)
    assert len(raw.content) > _BUFFER_JSON_MAX
    assert raw.content == plain.content
    assert len(raw.parse().data) == LARGE_INPUTS
    assert "recovea-receipt" not in raw.headers
    request_id = raw.headers["x-request-id"]
    found = row(gateway, tenant, request_id)
    assert tokens(found) == (98765, None, None, None)
    assert (found["success"], found["baseline_model"]) == (True, "text-embedding-3-large")
    assert stored(gateway, tenant, "receipts", request_id)["token"]


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_gateway_memory_does_not_grow_with_a_large_json_body(
    start_gateway: Any, tenant: Tenant
) -> None:
    """A 40 MB JSON body passes through a fresh gateway while its peak memory grows by
    far less than the body: only the tail of it is kept."""
    gateway = start_gateway()
    body = {
        "model": "text-embedding-3-large",
        "input": [f"p{i}" for i in range(950)],
        "dimensions": 3072,
        "encoding_format": "float",
    }
    headers = {**tenant.bearer, "content-type": "application/json", "x-mock-pretty": "1"}
    url = f"{gateway.url}/v1/embeddings"
    warm = httpx.post(url, content=orjson.dumps({**body, "input": ["w"]}), headers=headers)
    assert warm.status_code == 200
    before = peak_rss_kb(gateway.process.pid)
    size = 0
    with httpx.stream("POST", url, content=orjson.dumps(body), headers=headers, timeout=60) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            size += len(chunk)
        request_id = r.headers["x-request-id"]
    assert size > 40_000_000
    growth_kb = peak_rss_kb(gateway.process.pid) - before
    assert growth_kb * 1024 < size // 8, f"peak RSS grew {growth_kb} KB for {size} bytes"
    assert row(gateway, tenant, request_id)["input_tokens"] == 12
