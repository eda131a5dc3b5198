"""The per-request record: filled step by step as a request runs, read at its end.

Everything the log line, the metrics and (later) the metering row and receipt need
is here, and nothing else: no prompt text, no response text, no key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recovea_proxy.providers.usage import Usage


@dataclass(slots=True)
class RequestRecord:
    """One request's body-free facts."""

    request_id: str
    trace_id: str
    #: perf_counter_ns() when the request arrived (for durations)
    started_ns: int
    #: wall-clock arrival time, epoch milliseconds (for the ledger)
    ts_epoch_ms: int
    method: str = ""
    provider: str = ""
    route: str = ""
    kind: str = ""
    model: str | None = None
    #: the model that served the request when a lever changed it (None: the baseline)
    realized_model: str | None = None
    stream: bool = False
    workspace_id: str | None = None
    project_id: str | None = None
    team_id: str | None = None
    rcv_key_id: str | None = None
    env: str | None = None
    feature: str | None = None
    end_user_id: str | None = None
    request_bytes: int = 0
    #: body bytes of a streamed response sent to the client so far (set when it ends)
    response_bytes: int = 0
    status_code: int = 0
    upstream_request_id: str | None = None
    usage: Usage = field(default_factory=Usage)
    #: True when the provider answered 2xx and signalled a normal end; False on any
    #: error; None when the outcome is ambiguous (client left, no terminal event).
    success: bool | None = None
    error_code: str | None = None
    client_gone: bool = False
    #: the response's status line has been sent (an error can no longer be answered)
    responded: bool = False
    upstream_wait_ns: int = 0
    levers_fired: dict[str, str] = field(default_factory=dict)
    cache_hit: bool = False
    cache_type: str | None = None
    dedup_singleflight: bool = False
    fell_back: bool = False
    #: hex SHA-256 of the request body the client sent (receipts)
    request_sha256: str = ""
    #: the signed receipt token, once the response's end has been reached
    receipt: str | None = None
    #: the running SHA-256 of the response bytes sent (streams)
    response_hash: Any = None
    #: (chain, seq, kid) of that receipt, for the ledger
    receipt_place: tuple[str, int, str] | None = None
    #: the caller's span id from its `traceparent` (the parent of the gateway's span)
    parent_span_id: str | None = None

    #: wall time from the first byte of the request to the end of the response, and
    #: the part of it not spent waiting on the provider (ms, microsecond precision);
    #: set by `end`
    latency_ms: float = 0.0
    overhead_ms: float = 0.0

    def end(self, ended_ns: int) -> None:
        """The request ended at `ended_ns` (perf_counter_ns): fix its durations."""
        total = ended_ns - self.started_ns
        self.latency_ms = total // 1000 / 1000
        self.overhead_ms = max(0, total - self.upstream_wait_ns) // 1000 / 1000
