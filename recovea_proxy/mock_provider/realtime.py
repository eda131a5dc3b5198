"""The mock's WebSocket endpoints: OpenAI's Realtime API (`GET /v1/realtime`) and the
Responses API's WebSocket mode (`GET /v1/responses`).

Realtime: on connect, `session.created` with the query's `model`; `session.update` is
answered with `session.updated`, `conversation.item.create` with
`conversation.item.created`, and `response.create` with `response.created`, a few
`response.output_text.delta` events (the text names the last item created),
`response.output_text.done` and `response.done` carrying usage (the handshake's
`x-mock-*-tokens` headers, as for HTTP; `x-mock-chunk-delay-ms` before each delta).
Responses mode: each `response.create`
(the request body's fields, flattened) gets the events of the SSE stream, as JSON
messages, ending with `response.completed` carrying usage.

Ids count per connection, so the same conversation always gets the same messages.
For tests, on both:

- a handshake without a key, or with `x-mock-ws-status: N`, is refused with status N
  (401 without a key) and an OpenAI-shaped JSON error, as the real API refuses a bad key;
- a binary message is echoed back as it came;
- `{"type": "mock.close", "code": C, "reason": R}` closes the session with C and R;
- `{"type": "mock.send_bytes", "size": N}` sends N zero bytes in one binary message.

The journal records the handshake like any request, plus `ws`: the types of the text
messages received, the binary ones' count and bytes, and the close code the session
ended with (`close_code`: the client's when it closed first).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from recovea_proxy.mock_provider import journal, responses_wire
from recovea_proxy.mock_provider.controls import MockDefaults, Plan, plan_for
from recovea_proxy.mock_provider.text import pieces

DEFAULTS_KEY = web.AppKey("mock_ws_defaults", MockDefaults)
_MAX_MESSAGE = 64 * 1024 * 1024
_DEFAULT_MODEL = "gpt-realtime"


def _refusal(request: web.Request) -> web.Response | None:
    """The handshake's refusal, if it is to be refused."""
    status_header = request.headers.get("x-mock-ws-status", "")
    auth = request.headers.get("authorization", "")
    has_key = auth[:7].lower() == "bearer " and bool(auth[7:].strip())
    if has_key and not status_header.isdigit():
        return None
    status = int(status_header) if status_header.isdigit() else 401
    message = "Incorrect API key provided." if status == 401 else "Refused by the mock."
    code = "invalid_api_key" if status == 401 else "mock_refused"
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    body["error"]["code"] = code
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"x-request-id": "req_mock_ws_refused"},
    )


class _Session:
    """One connection's state and the helpers every mode shares."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.plan = plan_for(request.app[DEFAULTS_KEY], request.headers, request.path.encode())
        self.events = 0
        self.state = journal.ws_state(request)

    def event_id(self) -> str:
        self.events += 1
        return f"event_{self.events:04d}"

    async def emit(self, kind: str, **fields: Any) -> None:
        await self.ws.send_str(
            orjson.dumps({"type": kind, "event_id": self.event_id(), **fields}).decode()
        )

    async def handle_common(self, msg: Any) -> dict[str, Any] | None:
        """The test controls and binary echo; the parsed event when it is the mode's."""
        if msg.type is WSMsgType.BINARY:
            self.state["binary"] += 1
            self.state["binary_bytes"] += len(msg.data)
            await self.ws.send_bytes(msg.data)
            return None
        try:
            event = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        self.state["received"].append(kind)
        if kind == "mock.close":
            reason = str(event.get("reason", "")).encode()
            await self.ws.close(code=int(event.get("code", 1000)), message=reason)
            return None
        if kind == "mock.send_bytes":
            await self.ws.send_bytes(bytes(int(event.get("size", 0))))
            return None
        return event


def _realtime_usage(plan: Plan) -> dict[str, Any]:
    s = plan.shape
    cached = min(s.cached_tokens, s.input_tokens)
    return {
        "total_tokens": s.input_tokens + s.output_tokens,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "input_token_details": {
            "text_tokens": s.input_tokens,
            "audio_tokens": 0,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0},
        },
        "output_token_details": {"text_tokens": s.output_tokens, "audio_tokens": 0},
    }


async def realtime(request: web.Request) -> web.StreamResponse:
    """`GET /v1/realtime`: a Realtime session."""
    journal.record(request, b"", None)
    refused = _refusal(request)
    if refused is not None:
        return refused
    ws = web.WebSocketResponse(max_msg_size=_MAX_MESSAGE, autoping=True)
    await ws.prepare(request)
    s = _Session(request, ws)
    model = request.query.get("model") or _DEFAULT_MODEL
    session: dict[str, Any] = {"id": "sess_mock_0001", "object": "realtime.session"}
    session["type"] = "realtime"
    session |= {"model": model, "output_modalities": ["text"], "instructions": ""}
    await s.emit("session.created", session=session)
    items: list[dict[str, Any]] = []
    async for msg in ws:
        event = await s.handle_common(msg)
        if event is None:
            continue
        kind = event.get("type")
        if kind == "session.update" and isinstance(event.get("session"), dict):
            session = session | {k: v for k, v in event["session"].items() if k != "model"}
            await s.emit("session.updated", session=session)
        elif kind == "conversation.item.create" and isinstance(event.get("item"), dict):
            item = {**event["item"], "id": f"item_{len(items) + 1:04d}", "status": "completed"}
            items.append(item)
            previous = items[-2]["id"] if len(items) > 1 else None
            await s.emit("conversation.item.created", previous_item_id=previous, item=item)
        elif kind == "response.create":
            await _realtime_response(s, items)
        else:
            error = {"type": "invalid_request_error", "code": "unknown_event", "message": "?"}
            await s.emit("error", error=error)
    s.state["close_code"] = ws.close_code
    return ws


async def _realtime_response(s: _Session, items: list[dict[str, Any]]) -> None:
    number = s.events
    response_id = f"resp_mock_{number:04d}"
    item_id = f"item_out_{number:04d}"
    response: dict[str, Any] = {"id": response_id, "object": "realtime.response"}
    response["status"] = "in_progress"
    response |= {"output": [], "usage": None, "conversation_id": "conv_mock_0001"}
    await s.emit("response.created", response=response)
    text = f"Mock reply to {items[-1]['id'] if items else 'nothing'}."
    where: dict[str, Any] = {"response_id": response_id, "item_id": item_id, "output_index": 0}
    where["content_index"] = 0
    for piece in pieces(text, min(s.plan.shape.chunks, 4)):
        if s.plan.shape.chunk_delay_ms:
            await asyncio.sleep(s.plan.shape.chunk_delay_ms / 1000)
        await s.emit("response.output_text.delta", **where, delta=piece)
    await s.emit("response.output_text.done", **where, text=text)
    item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message"}
    item["role"] = "assistant"
    item |= {"status": "completed", "content": [{"type": "output_text", "text": text}]}
    done = {**response, "status": "completed", "output": [item]}
    done["usage"] = _realtime_usage(s.plan)
    await s.emit("response.done", response=done)


async def responses(request: web.Request) -> web.StreamResponse:
    """`GET /v1/responses` upgraded: the Responses API's WebSocket mode."""
    journal.record(request, b"", None)
    refused = _refusal(request)
    if refused is not None:
        return refused
    ws = web.WebSocketResponse(max_msg_size=_MAX_MESSAGE, autoping=True)
    await ws.prepare(request)
    s = _Session(request, ws)
    async for msg in ws:
        event = await s.handle_common(msg)
        if event is None:
            continue
        if event.get("type") != "response.create":
            error = {"type": "invalid_request_error", "code": "unknown_event", "message": "?"}
            await s.emit("error", error=error)
            continue
        body = {k: v for k, v in event.items() if k != "type"}
        plan = plan_for(request.app[DEFAULTS_KEY], request.headers, orjson.dumps(body))
        for sse in responses_wire.responses_events(body, plan):
            data = sse[sse.index(b"data: ") + 6 :].rstrip(b"\n")
            await ws.send_str(data.decode())
    s.state["close_code"] = ws.close_code
    return ws
