"""structlog set-up: JSON lines (orjson) off a TTY, console on one, always redacted.

The gateway logs one line per request (`event="request"`) plus lifecycle events.
Standard-library records (uvicorn, aiohttp, asyncio) go through the same redaction,
and so does an exception's traceback: it is formatted into the line before the
redaction step runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import orjson
import structlog

from recovea_proxy.observability.redact import redact_processor

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class _IsoSeconds:
    """The ISO-8601 UTC prefix of the current second, formatted once per second."""

    second = -1
    prefix = ""


def utc_timestamp(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Adds `timestamp` (ISO 8601, UTC, milliseconds) at a fraction of TimeStamper's cost."""
    now = time.time()
    second = int(now)
    if second != _IsoSeconds.second:
        _IsoSeconds.second = second
        _IsoSeconds.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    event_dict["timestamp"] = f"{_IsoSeconds.prefix}.{int((now - second) * 1000):03d}Z"
    return event_dict


def configure_logging(log_format: str, level: str = "info", *, to_stderr: bool = False) -> None:
    """Configure structlog and the standard library's root logger once per process
    (on stdout; on stderr for a command whose stdout is its answer)."""
    stream = sys.stderr if to_stderr else sys.stdout
    level_no = _LEVELS.get(level, 20)
    # Tracebacks become text before the redaction step, so an exception's message is
    # redacted like any other string (rendered after it, it would be printed whole).
    shared: list[Any] = [
        structlog.processors.add_log_level,
        utc_timestamp,
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    if log_format == "json":
        renderer: Any = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory: Any = structlog.BytesLoggerFactory(stream.buffer)
    else:
        # Plain tracebacks: rich's would print every frame's local variables, unredacted.
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    std_renderer: Any = structlog.processors.JSONRenderer() if log_format == "json" else renderer
    handler = logging.StreamHandler(stream)
    handler.addFilter(_LibraryChatter(level_no))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, std_renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_no)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The gateway writes its own line per request; uvicorn's access line would repeat it.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False


#: libraries whose info-level records are chatter: pgserver's commands and checks,
#: uvicorn's lifecycle lines (the gateway's own start-up lines say what matters)
_CHATTY = frozenset({"pgserver", "uvicorn"})


class _LibraryChatter(logging.Filter):
    """Lowers the chatty libraries' info records to debug (shown only at debug)."""

    def __init__(self, level_no: int) -> None:
        super().__init__()
        self._level_no = level_no

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.split(".", 1)[0] in _CHATTY:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._level_no <= logging.DEBUG
        return True


class RequestLog:
    """The one line per request, on the hot path's budget.

    In JSON mode it adds the same timestamp and renders with orjson, skipping the
    bound logger's per-call copies; in console mode it goes through structlog like
    every other line. Its fields are the gateway's own ids and counts plus strings
    from callers and providers that were cleaned and redacted where the record was
    built (see `recovea_proxy.clean`), so the per-line redaction scan is not
    repeated here.

    JSON lines are held in the log's own buffer and written together, at most
    FLUSH_AFTER_S after the first of them (or once BUFFER_BYTES are waiting, or at
    shutdown): one write(2) for many requests, whether or not the interpreter
    buffers stdout (PYTHONUNBUFFERED, as container images set it, does not).
    """

    FLUSH_AFTER_S = 0.1
    BUFFER_BYTES = 64 * 1024

    def __init__(self, log_format: str) -> None:
        self._out = sys.stdout.buffer if log_format == "json" else None
        self._log = structlog.get_logger("recovea")
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_timer: asyncio.TimerHandle | None = None

    def write(self, fields: dict[str, Any]) -> None:
        """Write one request's body-free fields as the `request` event."""
        if self._out is None:
            self._log.info("request", **fields)
            return
        fields["event"] = "request"
        fields["level"] = "info"
        utc_timestamp(None, "info", fields)
        line = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= self.BUFFER_BYTES:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                self.FLUSH_AFTER_S, self.flush
            )

    def flush(self) -> None:
        """Write the waiting lines to the stream now."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._out is not None and self._pending:
            lines = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._out.write(lines)
            self._out.flush()
