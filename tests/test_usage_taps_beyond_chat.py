"""Usage outside chat: images and audio bodies, the streamed transcription's final
event, and the tail reader that finds `usage` at the end of a JSON body too large to
buffer — fed the bytes a provider sends, split anywhere."""

from __future__ import annotations

import orjson
import pytest

from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.base import (
    CHAT,
    EMBEDDINGS,
    IMAGES,
    MESSAGES,
    OTHER,
    RESPONSES,
    TRANSCRIPTIONS,
    StreamTap,
)
from recovea_proxy.providers.json_tail import TAIL_BYTES, JsonTail, usage_object
from recovea_proxy.providers.usage import Usage

OPENAI = PROVIDERS["openai"]

IMAGE_BODY = orjson.dumps(
    {
        "created": 1713833628,
        "data": [{"b64_json": "iVBORw0KGgo" * 40}],
        "background": "opaque",
        "output_format": "png",
        "usage": {
            "input_tokens": 50,
            "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
            "output_tokens": 272,
            "total_tokens": 322,
        },
    }
)

TRANSCRIPTION_BODY = (
    b'{"text":"Imagine the wildest idea.","usage":{"type":"tokens","input_tokens":14,'
    b'"input_token_details":{"text_tokens":0,"audio_tokens":14},"output_tokens":45,'
    b'"total_tokens":59}}'
)

TRANSCRIPTION_STREAM = (
    b'data: {"type":"transcript.text.delta","delta":"I","logprobs":null}\n\n'
    b'data: {"type":"transcript.text.delta","delta":" see \\"usage\\"","logprobs":null}\n\n'
    b'data: {"type":"transcript.text.done","text":"I see \\"usage\\"","usage":{"type":"tokens",'
    b'"input_tokens":14,"input_token_details":{"text_tokens":0,"audio_tokens":14},'
    b'"output_tokens":45,"total_tokens":59}}\n\n'
)


def parsed(provider: str, kind: str, body: bytes) -> Usage:
    return PROVIDERS[provider].usage_from_json(kind, orjson.loads(body))


def test_image_and_audio_paths_have_kinds_of_their_own() -> None:
    """Image generations and edits, audio transcriptions and translations each name
    their endpoint kind and route; other image and audio paths stay `other`."""
    assert OPENAI.endpoint_of("/v1/images/generations") == (IMAGES, "/v1/images/generations")
    assert OPENAI.endpoint_of("/v1/images/edits") == (IMAGES, "/v1/images/edits")
    assert OPENAI.endpoint_of("/v1/audio/transcriptions") == (
        TRANSCRIPTIONS,
        "/v1/audio/transcriptions",
    )
    assert OPENAI.endpoint_of("/v1/audio/translations") == (
        TRANSCRIPTIONS,
        "/v1/audio/translations",
    )
    assert OPENAI.endpoint_of("/v1/images/variations") == (OTHER, "/v1/images/*")
    assert OPENAI.endpoint_of("/v1/audio/speech") == (OTHER, "/v1/audio/*")


def test_gpt_image_usage_is_read() -> None:
    """gpt-image models report input and output tokens; no cached count is made up."""
    usage = parsed("openai", IMAGES, IMAGE_BODY)
    assert usage == Usage(50, 272, None, None, None, terminal=True)


def test_dall_e_without_usage_leaves_counts_none() -> None:
    """dall-e answers without usage: every count stays None, the outcome is normal."""
    usage = parsed("openai", IMAGES, b'{"created":1,"data":[{"url":"https://x"}]}')
    assert usage == Usage(terminal=True)


def test_token_transcription_usage_is_read() -> None:
    """gpt-4o-transcribe models report input (audio) and output tokens."""
    assert parsed("openai", TRANSCRIPTIONS, TRANSCRIPTION_BODY) == Usage(14, 45, terminal=True)


def test_duration_transcription_usage_has_no_tokens() -> None:
    """whisper-1 reports seconds of audio, not tokens: the counts stay None."""
    body = b'{"text":"hi","usage":{"type":"duration","seconds":3}}'
    assert parsed("openai", TRANSCRIPTIONS, body) == Usage(terminal=True)
    assert parsed("openrouter", TRANSCRIPTIONS, body) == Usage(terminal=True)


@pytest.mark.parametrize("cut", range(0, len(TRANSCRIPTION_STREAM) + 1, 5))
def test_streamed_transcription_usage_survives_any_split(cut: int) -> None:
    """The final `transcript.text.done` event carries the usage; a `"usage"` inside the
    text is not taken for it."""
    tap = OPENAI.stream_tap(TRANSCRIPTIONS)
    assert tap is not None
    tap.feed(TRANSCRIPTION_STREAM[:cut])
    tap.feed(TRANSCRIPTION_STREAM[cut:])
    tap.close()
    assert tap.usage == Usage(14, 45, terminal=True)


def test_streamed_transcription_error_event_marks_error() -> None:
    """An error event in a transcription stream marks the outcome as an error."""
    tap = OPENAI.stream_tap(TRANSCRIPTIONS)
    assert tap is not None
    tap.feed(b'data: {"type":"error","error":{"message":"boom"}}\n\n')
    tap.close()
    assert (tap.usage.error, tap.usage.input_tokens) == (True, None)


def image_stream(image_bytes: int, *, usage: bool = True, done: bool = False) -> bytes:
    """An image stream: a partial image, then the completed event with usage last."""
    image = "A" * image_bytes
    partial = {"type": "image_generation.partial_image", "b64_json": image}
    completed: dict[str, object] = {"type": "image_generation.completed", "b64_json": image}
    if usage:
        completed["usage"] = orjson.loads(IMAGE_BODY)["usage"]
    return (
        b"event: image_generation.partial_image\ndata: " + orjson.dumps(partial) + b"\n\n"
        b"event: image_generation.completed\ndata: " + orjson.dumps(completed) + b"\n\n"
    ) + (b"data: [DONE]\n\n" if done else b"")


@pytest.mark.parametrize("image_bytes", [10, 70_000, 3_000_000])
@pytest.mark.parametrize("done", [False, True])
def test_streamed_image_usage_is_read_after_an_image_of_any_size(
    image_bytes: int, done: bool
) -> None:
    """The completed event's usage follows a base64 image of up to megabytes: it is read
    from the stream's tail, with or without a closing [DONE]."""
    tap = OPENAI.stream_tap(IMAGES)
    assert tap is not None
    stream = image_stream(image_bytes, done=done)
    for at in range(0, len(stream), 65_521):
        tap.feed(stream[at : at + 65_521])
    tap.close()
    assert tap.usage == Usage(50, 272, terminal=True)


def test_streamed_image_without_usage_or_cut_off_has_none() -> None:
    """dall-e streams no usage; a stream cut inside its last event has none either."""
    for stream in (image_stream(100, usage=False), image_stream(100)[:-20]):
        tap = OPENAI.stream_tap(IMAGES)
        assert tap is not None
        tap.feed(stream)
        tap.close()
        assert tap.usage == Usage()


def test_streamed_image_error_event_marks_error() -> None:
    """An error event ends the stream: the outcome is an error."""
    tap = OPENAI.stream_tap(IMAGES)
    assert tap is not None
    tap.feed(image_stream(100)[:40] + b'\n\ndata: {"type":"error","error":{"message":"x"}}\n\n')
    tap.close()
    assert tap.usage.error is True


# --- the tail of a JSON body too large to buffer ------------------------------------


def embeddings_body(vectors: int, dimensions: int, note: str = "") -> bytes:
    """An embeddings list as OpenAI writes it: pretty-printed, usage last."""
    doc = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.0123] * dimensions}
            for i in range(vectors)
        ],
        "model": "text-embedding-3-small",
        "note": note,
        "usage": {"prompt_tokens": 4321, "total_tokens": 4321},
    }
    if not note:
        del doc["note"]
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def tail_tap(provider: str, kind: str) -> StreamTap:
    tap = PROVIDERS[provider].json_tail_tap(kind)
    assert tap is not None
    return tap


def feed_chunks(tap: StreamTap, body: bytes, size: int) -> Usage:
    for at in range(0, len(body), size):
        tap.feed(body[at : at + size])
    tap.close()
    return tap.usage


@pytest.mark.parametrize("size", [1, 7, 4096, 65_536, 65_537, 1 << 20])
def test_tail_reads_usage_at_the_end_of_a_pretty_printed_body(size: int) -> None:
    """A pretty-printed embeddings body far larger than the tail, fed in chunks of any
    size: the usage at its end is read, and the body counts as complete."""
    body = embeddings_body(40, 1536)
    assert len(body) > 10 * TAIL_BYTES
    usage = feed_chunks(tail_tap("openai", EMBEDDINGS), body, size)
    assert usage == Usage(4321, None, None, None, None, terminal=True)


@pytest.mark.parametrize("cut", range(1, 220, 3))
def test_tail_usage_survives_a_cut_anywhere_near_it(cut: int) -> None:
    """The chunk boundary falls anywhere in or around the usage object."""
    body = embeddings_body(3, 64)
    at = len(body) - cut
    tap = tail_tap("openai", EMBEDDINGS)
    tap.feed(body[:at])
    tap.feed(body[at:])
    tap.close()
    assert tap.usage.input_tokens == 4321


def test_usage_inside_a_string_is_not_taken() -> None:
    """A `"usage": {...}` written inside a string value is text, not the usage; a
    string value "usage" is not a key either."""
    fake = 'x "usage": {"prompt_tokens": 999, "total_tokens": 999} \\\\'
    body = embeddings_body(2, 8, note=fake)
    assert usage_object(body, whole=True) == {"prompt_tokens": 4321, "total_tokens": 4321}
    only_fake = b'{"note": "\\"usage\\": {\\"prompt_tokens\\": 9}", "type": "usage"}'
    assert usage_object(only_fake, whole=True) is None


def test_usage_of_a_nested_object_is_not_taken() -> None:
    """Only the top-level object's `usage` counts: a later nested one is passed over."""
    body = b'{"usage": {"prompt_tokens": 3}, "metadata": {"x": {"usage": {"prompt_tokens": 8}}}}'
    assert usage_object(body, whole=True) == {"prompt_tokens": 3}
    assert usage_object(b'{"data": [{"usage": {"prompt_tokens": 8}}]}', whole=True) is None


def test_usage_reported_as_null_is_none() -> None:
    """`"usage": null` is no usage, even with a nested one before it."""
    assert usage_object(b'{"data":[{"usage":{"a":1}}],"usage" : null}', whole=True) is None


@pytest.mark.parametrize("drop", [1, 2, 5, 20, 40])
def test_truncated_body_gives_no_usage(drop: int) -> None:
    """A body cut off at or before the end of its usage (the provider broke off) gives
    no usage: every count stays None."""
    body = embeddings_body(3, 64)
    usage = feed_chunks(tail_tap("openai", EMBEDDINGS), body[:-drop], 100)
    assert (usage.input_tokens, usage.output_tokens) == (None, None)


@pytest.mark.parametrize(
    "tail",
    [
        b'{"usage": {"prompt_tokens": 5,, "total_tokens": 5}}',
        b'{"usage": {"prompt_tokens": 5}}}',
        b'{"usage": {"prompt_tokens": "5}',
        b'{"usage": {"prompt_tokens": 5}]',
        b"",
        b"not json at all",
    ],
)
def test_malformed_tail_gives_no_usage(tail: bytes) -> None:
    """Bytes that are not the end of a JSON document with usage give None."""
    assert usage_object(tail, whole=True) is None


def test_key_at_a_trimmed_tails_start_is_not_trusted() -> None:
    """When the kept bytes begin right at the key, the backslashes that might escape it
    were dropped: the candidate is skipped rather than guessed."""
    kept = b'"usage": {"prompt_tokens": 5}}'
    assert usage_object(kept, whole=False) is None
    assert usage_object(b" " + kept, whole=False) == {"prompt_tokens": 5}


def test_hostile_tail_full_of_nested_usage_keys_is_bounded() -> None:
    """A tail of thousands of nested usage keys is looked at a few keys deep, then
    given up on (each candidate costs a scan of the tail)."""
    body = b'{"a": [' + b'{"usage": {"x": 1}},' * 3000 + b"0]}"
    assert usage_object(body[-TAIL_BYTES:]) is None


def test_tail_never_holds_more_than_its_bound() -> None:
    """However the body is chunked, the tail keeps at most its bound."""
    tail = JsonTail(1000)
    for size in (1, 999, 1000, 1001, 5000, 3, 700, 400):
        tail.feed(b"x" * size)
        assert tail.held <= 1000
    assert tail.trimmed and tail.value() == b"x" * 1000
    small = JsonTail(1000)
    small.feed(b'{"usage":{"a":1}}')
    assert not small.trimmed and small.usage_object() == {"a": 1}


@pytest.mark.parametrize(
    ("provider", "kind", "body", "expected"),
    [
        (
            "openai",
            CHAT,
            b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,'
            b'"prompt_tokens_details":{"cached_tokens":2}},"service_tier":"default"}',
            Usage(9, 4, 2, None, None, terminal=True),
        ),
        (
            "openai",
            RESPONSES,
            b'{"output":[],"usage":{"input_tokens":7,"output_tokens":3},"metadata":{}}',
            Usage(7, 3, None, None, None, terminal=True),
        ),
        ("openai", IMAGES, IMAGE_BODY, Usage(50, 272, terminal=True)),
        ("openai", TRANSCRIPTIONS, TRANSCRIPTION_BODY, Usage(14, 45, terminal=True)),
        (
            "anthropic",
            MESSAGES,
            b'{"content":[],"usage":{"input_tokens":5,"cache_read_input_tokens":10,'
            b'"output_tokens":6}}',
            Usage(15, 6, 10, None, None, terminal=True),
        ),
    ],
)
def test_every_json_kind_with_usage_gets_a_tail_tap(
    provider: str, kind: str, body: bytes, expected: Usage
) -> None:
    """Each kind whose JSON reports usage reads it from a large body's tail."""
    assert feed_chunks(tail_tap(provider, kind), body, 5) == expected


def test_kinds_without_json_usage_get_no_tail_tap() -> None:
    """Paths whose JSON has no usage (models, anything else) get no tail tap."""
    assert OPENAI.json_tail_tap(OTHER) is None
    assert PROVIDERS["anthropic"].json_tail_tap(OTHER) is None


def test_complete_body_without_usage_is_a_normal_end() -> None:
    """A whole body with no usage: counts None, but the response ended normally."""
    body = b'{"object":"list","data":[' + b"1," * 50_000 + b'1],"model":"m"}'
    assert feed_chunks(tail_tap("openai", EMBEDDINGS), body, 8192) == Usage(terminal=True)
