"""structlog set-up: JSON lines (orjson) off a TTY, console on one, always redacted.

The gateway logs one line per request (`event="request"`) plus lifecycle events.
Standard-library records (uvicorn, aiohttp) go through the same redaction.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from recovea_proxy.observability.redact import redact_processor

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure_logging(log_format: str, level: str = "info") -> None:
    """Configure structlog and the standard library's root logger once per process."""
    level_no = _LEVELS.get(level, 20)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    if log_format == "json":
        renderer: Any = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory: Any = structlog.BytesLoggerFactory(sys.stdout.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    std_renderer: Any = structlog.processors.JSONRenderer() if log_format == "json" else renderer
    handler = logging.StreamHandler(sys.stdout)
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
