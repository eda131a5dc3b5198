"""Receipts, keys and chains built with `cryptography` directly, following the receipt
format, for the verifier's tests (module and CLI)."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from recovea_proxy.meter import verify

REPO = Path(__file__).resolve().parent.parent
ZEROS = "0" * 64
RETIRED_AT = "2026-11-20T00:00:00+00:00"
#: epoch ms of RETIRED_AT
RETIRED_MS = 1_795_132_800_000
HOUR_MS = 3_600_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Signer:
    """One Ed25519 receipt key, as the gateway would hold it."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.kid = "rk_" + sha(self.raw)[:16]

    def entry(self, kid: str | None = None, retired: bool = False, **fields: Any) -> dict[str, Any]:
        """The key as `/.well-known/recovea-receipt-keys` lists it: created 2026-11-01,
        retired (when `retired`) 2026-11-20; the receipts below have ts 2026-11-18."""
        return {
            "kid": kid or self.kid,
            "alg": "Ed25519",
            "public_key": b64(self.raw),
            "created_at": "2026-11-01T00:00:00+00:00",
            "retired_at": RETIRED_AT if retired else None,
            **fields,
        }

    def token(self, payload: dict[str, Any]) -> str:
        body = canonical(payload)
        return b64(body) + "." + b64(self.private.sign(body))


def keys_doc(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(entries)}


REQUEST = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"h\xc3\xa9llo"}]}'
CHAT_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
CHAT_JSON = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": CHAT_USAGE,
    }
).encode()


def sse(*events: Any, done: bool = False) -> bytes:
    """SSE bytes: each event a dict (data only) or an (event name, dict) pair."""
    out = b""
    for event in events:
        name, data = event if isinstance(event, tuple) else (None, event)
        out += f"event: {name}\n".encode() if name else b""
        out += b"data: " + json.dumps(data).encode() + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def chat_chunk(content: str | None, usage: Any = None, **extra: Any) -> dict[str, Any]:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    return {"object": "chat.completion.chunk", "choices": choices, "usage": usage, **extra}


CHAT_STREAM = sse(chat_chunk("h"), chat_chunk("i"), chat_chunk(None, CHAT_USAGE), done=True)
CHAT_STREAM_NO_USAGE = sse(
    {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
    done=True,
)
RESPONSES_USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 17,
}
RESPONSES_JSON = json.dumps({"object": "response", "status": "completed", "usage": RESPONSES_USAGE})
RESPONSES_STREAM = sse(
    ("response.created", {"type": "response.created", "response": {"usage": None}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "hi"}),
    (
        "response.completed",
        {"type": "response.completed", "response": {"usage": RESPONSES_USAGE}},
    ),
)
ANTHROPIC_USAGE = {
    "input_tokens": 6,
    "cache_creation_input_tokens": 2,
    "cache_read_input_tokens": 4,
    "output_tokens": 5,
}
ANTHROPIC_JSON = json.dumps({"type": "message", "role": "assistant", "usage": ANTHROPIC_USAGE})
ANTHROPIC_STREAM = sse(
    (
        "message_start",
        {"type": "message_start", "message": {"usage": {**ANTHROPIC_USAGE, "output_tokens": 1}}},
    ),
    ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "hi"}}),
    ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 3}}),
    ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 5}}),
    ("message_stop", {"type": "message_stop"}),
)
OPENAI_COUNTS: dict[str, int | None] = {
    "input_tokens": 12,
    "output_tokens": 5,
    "cached_tokens": 4,
    "reasoning_tokens": 2,
}
ANTHROPIC_COUNTS = {**OPENAI_COUNTS, "reasoning_tokens": None}
USAGE_CASES: dict[str, tuple[bytes, dict[str, int | None]]] = {
    "openai chat json": (CHAT_JSON, OPENAI_COUNTS),
    "openai chat stream": (CHAT_STREAM, OPENAI_COUNTS),
    "openai responses json": (RESPONSES_JSON.encode(), OPENAI_COUNTS),
    "openai responses stream": (RESPONSES_STREAM, OPENAI_COUNTS),
    "anthropic json": (ANTHROPIC_JSON.encode(), ANTHROPIC_COUNTS),
    "anthropic stream": (ANTHROPIC_STREAM, ANTHROPIC_COUNTS),
}


def payload(signer: Signer, **fields: Any) -> dict[str, Any]:
    """A complete, consistent receipt payload for REQUEST and CHAT_JSON."""
    return {
        "v": "recovea-receipt-v1",
        "kid": signer.kid,
        "request_id": uuid.uuid4().hex,
        "ts": 1_795_000_000_123,
        "customer_id": str(uuid.uuid4()),
        "rcv_key_id": str(uuid.uuid4()),
        "provider": "openai",
        "baseline_model": "gpt-4o-mini",
        "realized_model": "gpt-4o-mini-2024-07-18 ü",
        **OPENAI_COUNTS,
        "cache_hit": False,
        "status": "success",
        "request_sha256": sha(REQUEST),
        "response_sha256": sha(CHAT_JSON),
        "chain": "c" * 32,
        "seq": 1,
        "prev": ZEROS,
        **fields,
    }


def chain_payloads(signer: Signer, count: int, chain: str = "a" * 32) -> list[dict[str, Any]]:
    payloads: list[dict[str, Any]] = []
    prev = ZEROS
    for seq in range(1, count + 1):
        payloads.append(payload(signer, chain=chain, seq=seq, prev=prev, input_tokens=seq))
        prev = sha(canonical(payloads[-1]))
    return payloads


def receipts(signer: Signer, payloads: list[dict[str, Any]]) -> list[verify.Receipt]:
    return [verify.decode_token(signer.token(p)) for p in payloads]


def export(
    tokens: list[str], start: int = 1, first_seq: int = 1, last_seq: int | None = None
) -> dict[str, Any]:
    """A `recovea-chain-v1` page holding `tokens` (seq `start` on), stating the chain's
    first_seq and last_seq (by default: this page is the chain's last)."""
    end = start + len(tokens) - 1
    last = end if last_seq is None else last_seq
    return {
        "object": "recovea-chain-v1",
        "chain": "a" * 32,
        "first_seq": first_seq,
        "last_seq": last,
        "receipts": [
            {"seq": start + i, "request_id": uuid.uuid4().hex, "token": t}
            for i, t in enumerate(tokens)
        ],
        "has_more": end < last,
        "next_after_seq": end if end < last else None,
    }


def malformed_tokens() -> dict[str, tuple[str, str]]:
    """Token → the message naming why it is not a receipt."""
    signer = Signer()
    good = payload(signer)
    sig = b64(bytes(64))
    return {
        "no dot": ("abcdef", "token is not <payload>.<signature>"),
        "bad base64": ("ab$cd." + sig, "token payload is not valid base64url"),
        "padded base64": (
            b64(canonical(good)) + "==." + sig,
            "token payload is not valid base64url",
        ),
        "short signature": (b64(canonical(good)) + "." + b64(b"x" * 10), "not 64 bytes"),
        "not json": (b64(b"not json") + "." + sig, "token payload is not UTF-8 JSON"),
        "not an object": (b64(b"[1,2]") + "." + sig, "token payload is not a JSON object"),
        "float": (signer.token({**good, "ts": 1.5}), "non-integer number (1.5)"),
        "spaces": (
            b64(json.dumps(good, sort_keys=True, ensure_ascii=False).encode()) + "." + sig,
            "token payload is not canonical JSON",
        ),
        "unsorted": (
            b64(json.dumps(dict(reversed(good.items())), separators=(",", ":")).encode())
            + "."
            + sig,
            "token payload is not canonical JSON",
        ),
        "ascii escaped": (
            b64(json.dumps(good, sort_keys=True, separators=(",", ":")).encode()) + "." + sig,
            "token payload is not canonical JSON",
        ),
        "missing field": (
            signer.token({k: v for k, v in good.items() if k != "prev"}),
            "receipt is missing prev",
        ),
        "unknown field": (signer.token({**good, "extra": 1}), "receipt has unknown fields extra"),
        "wrong type": (signer.token({**good, "seq": "1"}), "receipt field seq has the wrong type"),
        "bool seq": (signer.token({**good, "seq": True}), "receipt field seq has the wrong type"),
        "string ts": (signer.token({**good, "ts": "1"}), "receipt field ts has the wrong type"),
        "null chain": (signer.token({**good, "chain": None}), "field chain has the wrong type"),
        "nested value": (
            signer.token({**good, "provider": {"name": "openai"}}),
            "receipt field provider has the wrong type",
        ),
        "lone surrogate": (
            b64(canonical(good).replace(b'"openai"', b'"\\ud800"')) + "." + sig,
            "token payload holds a lone surrogate escape",
        ),
        "nested too deeply": (
            b64(b"[" * 100_000 + b"]" * 100_000) + "." + sig,
            "token payload is nested too deeply",
        ),
        "huge number": (
            b64(canonical(good).replace(b'"seq":1', b'"seq":' + b"9" * 5000)) + "." + sig,
            "token payload holds a number too long to read",
        ),
        "NaN": (
            b64(canonical(good).replace(b'"ts":1795000000123', b'"ts":NaN')) + "." + sig,
            "non-integer number (NaN)",
        ),
        "not ascii": ("\u00e9" + b64(canonical(good)) + "." + sig, "not valid base64url"),
        "not utf-8": (b64(b'{"v":"\xff"}') + "." + sig, "token payload is not UTF-8 JSON"),
    }


MALFORMED = malformed_tokens()
