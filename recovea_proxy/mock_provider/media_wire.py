"""OpenAI's image generation and audio transcription wire formats, as the mock writes
them.

- `POST /v1/images/generations` (JSON): `{created, data: [{b64_json}], usage}`, with
  `usage` (`input_tokens`, `input_tokens_details{text_tokens, image_tokens}`,
  `output_tokens`, `total_tokens`) for the gpt-image-* models only, none for dall-e-*;
  with `stream: true`, `image_generation.partial_image` events then
  `image_generation.completed` carrying the image and the usage;
- `POST /v1/audio/transcriptions` (multipart form): `{text, usage}`, token usage
  (`type: "tokens"`, `input_token_details{text_tokens, audio_tokens}`) for the
  gpt-4o-*-transcribe models, `{type: "duration", seconds}` for whisper-1; with
  `stream=true` an SSE stream of `transcript.text.delta` events ended by
  `transcript.text.done` with the same usage.

Token counts are the plan's (`x-mock-input-tokens`, `x-mock-output-tokens`); the
transcript's text says how many audio bytes arrived, and whisper's seconds are those
bytes at 16 kB per second.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from recovea_proxy.mock_provider import journal
from recovea_proxy.mock_provider.controls import Plan
from recovea_proxy.mock_provider.text import pieces

#: a 1x1 transparent PNG: the image every generation returns
PIXEL_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e5270de40000000049454e44ae426082"
    )
).decode()
AUDIO_BYTES_PER_SECOND = 16_000


def image_usage(body: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
    """The usage of a gpt-image-* generation; None for other models (dall-e-*)."""
    if not str(body.get("model", "")).startswith("gpt-image") or not plan.usage:
        return None
    s = plan.shape
    return {
        "input_tokens": s.input_tokens,
        "input_tokens_details": {"text_tokens": s.input_tokens, "image_tokens": 0},
        "output_tokens": s.output_tokens,
        "total_tokens": s.input_tokens + s.output_tokens,
    }


def images_json(body: dict[str, Any], plan: Plan) -> bytes:
    """A whole image generation answer: one b64 image per `n`, usage for gpt-image-*."""
    count = body.get("n")
    count = count if type(count) is int and 1 <= count <= 10 else 1
    doc: dict[str, Any] = {
        "created": plan.created,
        "data": [{"b64_json": PIXEL_PNG} for _ in range(count)],
    }
    usage = image_usage(body, plan)
    if usage is not None:
        doc["usage"] = usage
    return orjson.dumps(doc)


def images_events(body: dict[str, Any], plan: Plan) -> Iterator[bytes]:
    """A streamed generation: `partial_images` partial images (the image repeated to
    `x-mock-chunks` KiB-ish of base64 each, as large as real ones get), then
    `image_generation.completed` with the image and the usage last."""
    partials = body.get("partial_images")
    partials = partials if type(partials) is int and 0 <= partials <= 3 else 0
    image = PIXEL_PNG * max(1, plan.shape.chunks * 1024 // len(PIXEL_PNG))
    for index in range(partials):
        event = {
            "type": "image_generation.partial_image",
            "b64_json": image,
            "created_at": plan.created,
            "partial_image_index": index,
        }
        yield b"event: image_generation.partial_image\ndata: " + orjson.dumps(event) + b"\n\n"
    done: dict[str, Any] = {
        "type": "image_generation.completed",
        "b64_json": image,
        "created_at": plan.created,
        "output_format": "png",
    }
    usage = image_usage(body, plan)
    if usage is not None:
        done["usage"] = usage
    yield b"event: image_generation.completed\ndata: " + orjson.dumps(done) + b"\n\n"


async def read_form(request: web.Request) -> tuple[dict[str, Any], bytes]:
    """A multipart request's text fields (plus `file_bytes`: the size of its file
    parts), journalled; and the bytes its ids derive from."""
    fields: dict[str, Any] = {}
    digest = hashlib.sha256()
    size = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.filename is None:
            fields[str(part.name)] = await part.text()
            continue
        while chunk := await part.read_chunk():
            size += len(chunk)
            digest.update(chunk)
    fields["file_bytes"] = size
    journal.record(request, b"", fields)
    ident = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS) + digest.digest()
    return fields, ident


def _transcript(form: dict[str, Any]) -> str:
    return f"mock transcript of {form.get('file_bytes', 0)} audio bytes"


def transcription_usage(form: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
    """Token usage for the gpt-4o-*-transcribe models, duration for the others."""
    if not plan.usage:
        return None
    if "transcribe" in str(form.get("model", "")):
        s = plan.shape
        return {
            "type": "tokens",
            "input_tokens": s.input_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": s.input_tokens},
            "output_tokens": s.output_tokens,
            "total_tokens": s.input_tokens + s.output_tokens,
        }
    seconds = max(1, int(form.get("file_bytes", 0)) // AUDIO_BYTES_PER_SECOND)
    return {"type": "duration", "seconds": seconds}


def transcription_json(form: dict[str, Any], plan: Plan) -> bytes:
    """A whole transcription: `{text, usage}`."""
    doc: dict[str, Any] = {"text": _transcript(form)}
    usage = transcription_usage(form, plan)
    if usage is not None:
        doc["usage"] = usage
    return orjson.dumps(doc)


def transcription_events(form: dict[str, Any], plan: Plan) -> Iterator[bytes]:
    """A streamed transcription: text deltas, then `transcript.text.done` with usage."""
    text = _transcript(form)
    for piece in pieces(text, plan.shape.chunks):
        event = {"type": "transcript.text.delta", "delta": piece, "logprobs": None}
        yield b"data: " + orjson.dumps(event) + b"\n\n"
    done: dict[str, Any] = {"type": "transcript.text.done", "text": text, "logprobs": None}
    usage = transcription_usage(form, plan)
    if usage is not None:
        done["usage"] = usage
    yield b"data: " + orjson.dumps(done) + b"\n\n"
