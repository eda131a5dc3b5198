"""Metering a WebSocket session: one ledger row per response, read from the frames as
they pass.

A session is cut into windows: each runs from the end of the previous response (or
the session's start) to the server event that ends the next one (Realtime's
`response.done`; `response.completed`, `.incomplete` or `.failed` in the Responses
API's WebSocket mode). That event gives the row its usage and outcome; the row's
latency runs from the window's first client message (or its start, when the
provider began on its own) to that event, and its receipt hashes the client's and
the server's messages of the window (`request_sha256`, `response_sha256`). Receipts
are signed and chained like every row's but never sent in-band (an event type the
SDKs do not know could break their parsers): they are read from the ledger.

Only server text messages that name one of the few events read here are parsed, and
only up to `PARSE_MAX` bytes: audio and text deltas pass with one regex scan. At the
session's end:

| state                       | row                                                   |
| a response begun, not ended | that response: `success` NULL (the client left, the    |
|                             | session closed) or false with the error code (the     |
|                             | provider's side failed)                               |
| no response at all          | one for the session: status 101, NULL tokens, the     |
|                             | session's outcome                                     |
| otherwise                   | none (messages after the last response are not billed) |
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import orjson

from recovea_proxy.clean import ID_MAX, clean_model, clean_text, clean_usage
from recovea_proxy.ids import new_id
from recovea_proxy.providers.openai_realtime import REALTIME_DONE, RESPONSES_DONE, ending_outcome
from recovea_proxy.record import RequestRecord
from recovea_proxy.runtime import Runtime

#: the largest server message parsed (larger ones pass unread)
PARSE_MAX = 4 * 1024 * 1024
#: the event types read, as they appear quoted in a message (inside a JSON string a
#: quote is escaped, so text that merely mentions them does not match)
_EVENTS = re.compile(
    rb'"(?:response\.(?:done|completed|incomplete|failed|created)|session\.(?:created|updated))"'
)
_SESSION_EVENTS = frozenset({"session.created", "session.updated"})


class WebSocketMeter:
    """The rows of one accepted session: fed every relayed message, finished once."""

    __slots__ = (
        "_done",
        "_first_client",
        "_open",
        "_request",
        "_response",
        "_rt",
        "_session",
        "_start_ms",
        "_start_ns",
        "model",
        "overhead_ns",
        "request_bytes",
        "responses",
    )

    def __init__(self, rt: Runtime, session: RequestRecord, *, realtime: bool) -> None:
        self._rt = rt
        self._session = session
        self._done = REALTIME_DONE if realtime else RESPONSES_DONE
        #: the model the session is for (the query's, then the session's own)
        self.model = session.model
        #: rows written for responses so far
        self.responses = 0
        #: time spent on the gateway's own work in this window (ns)
        self.overhead_ns = 0
        self._new_window(time.perf_counter_ns())

    def _new_window(self, now_ns: int) -> None:
        self._start_ns = now_ns
        self._start_ms = time.time_ns() // 1_000_000
        self._first_client = False
        self._open = False
        self._request = hashlib.sha256()
        self._response = hashlib.sha256()
        self.request_bytes = 0
        self.overhead_ns = 0

    def client_message(self, data: bytes) -> None:
        """A message from the client, on its way upstream."""
        if not self._first_client:
            self._first_client = True
            self._start_ns = time.perf_counter_ns()
            self._start_ms = time.time_ns() // 1_000_000
        self._request.update(data)
        self.request_bytes += len(data)

    def server_message(self, data: bytes, *, text: bool) -> None:
        """A message from the provider, on its way to the client."""
        self._response.update(data)
        if not text or len(data) > PARSE_MAX or _EVENTS.search(data) is None:
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "response.created":
            self._open = True
        elif kind in self._done:
            self._write_response(kind, event.get("response"))
        elif kind in _SESSION_EVENTS:
            session = event.get("session")
            model = clean_model(session.get("model")) if isinstance(session, dict) else None
            if model is not None:
                self.model = model

    def _write_response(self, kind: str, response: Any) -> None:
        record = self._record()
        ending_outcome(kind, response, record.usage)
        record.usage = clean_usage(record.usage)
        if isinstance(response, dict):
            record.model = clean_model(response.get("model")) or record.model
            response_id = response.get("id")
            if isinstance(response_id, str):
                record.upstream_request_id = clean_text(response_id, ID_MAX)
        usage = record.usage
        record.success = False if usage.error else (True if usage.terminal else None)
        record.status_code = 200
        self.responses += 1
        self._write(record)

    def finish(self, *, success: bool | None, error_code: str | None, client_left: bool) -> None:
        """The session ended: the row of a response cut short, or of a session that
        had none (see the module's table)."""
        if self._open:
            record = self._record()
            record.status_code = 200
            # cut short: never a success, a failure only when the provider's side failed
            record.success = False if success is False else None
            record.client_gone = client_left
        elif self.responses == 0:
            record = self._record(self._session.request_id)
            record.status_code = 101
            record.success = success
        else:
            return
        record.error_code = error_code
        self._write(record)

    def _record(self, request_id: str | None = None) -> RequestRecord:
        s = self._session
        record = RequestRecord(
            request_id=request_id or new_id(),
            trace_id=s.trace_id,
            started_ns=self._start_ns,
            ts_epoch_ms=self._start_ms,
            method=s.method,
            provider=s.provider,
            route=s.route,
            kind=s.kind,
            model=self.model,
            stream=True,
            workspace_id=s.workspace_id,
            project_id=s.project_id,
            team_id=s.team_id,
            rcv_key_id=s.rcv_key_id,
            env=s.env,
            feature=s.feature,
            end_user_id=s.end_user_id,
            request_bytes=self.request_bytes,
            responded=True,
        )
        return record

    def _write(self, record: RequestRecord) -> None:
        now = time.perf_counter_ns()
        record.request_sha256 = self._request.hexdigest()
        record.response_hash = self._response
        record.upstream_wait_ns = max(0, now - record.started_ns - self.overhead_ns)
        record.end(now)
        self._rt.finish(record)
        self._new_window(now)
