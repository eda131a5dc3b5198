"""Strings from callers and providers, made safe for a row, a receipt, a log line or
a metric label.

Every such string is hostile until cleaned: it may hold NUL and other control
characters (Postgres refuses NUL in text), lone surrogates (no UTF-8 encoder takes
them), megabytes, or a key pasted by mistake. `clean_text` removes every character
Python does not call printable (control, format, separator other than the ASCII
space, surrogate, unassigned), masks key-shaped tokens as the log does, and cuts
the rest to a limit. A clean, short string (nearly every one) costs one
`isprintable` scan and the redaction's hint checks.

| what                         | limit                 |
| model names                  | `MODEL_MAX` (256)     |
| tags (feature, end user)     | `TAG_MAX` (128)       |
| trace ids                    | `TRACE_ID_MAX` (64)   |
| provider ids (request id)    | `ID_MAX` (128)        |
| finish reasons               | `FINISH_REASON_MAX` (64) |
| service tiers                | `TIER_MAX` (32)       |
"""

from __future__ import annotations

from recovea_proxy.observability.redact import redact_text
from recovea_proxy.providers.usage import Usage

MODEL_MAX = 256
TAG_MAX = 128
TRACE_ID_MAX = 64
ID_MAX = 128
FINISH_REASON_MAX = 64
TIER_MAX = 32


def clean_text(value: str, limit: int) -> str | None:
    """`value` without unprintable characters, key-shaped tokens masked, at most
    `limit` characters; None when nothing is left."""
    if len(value) > limit * 4:
        value = value[: limit * 4]  # what could survive the cut, with room for removals
    if not value.isprintable():
        value = "".join(ch for ch in value if ch.isprintable())
    value = redact_text(value)
    if len(value) > limit:
        value = value[:limit]
    return value or None


def clean_model(value: object) -> str | None:
    """A model name as the caller or provider sent it, or None when it is not a string."""
    return clean_text(value, MODEL_MAX) if isinstance(value, str) else None


def clean_usage(usage: Usage) -> Usage:
    """The provider's usage with its free-text fields (the finish reason, the service
    tier) cleaned; counts are bounded where they are read (`providers.usage.as_count`)."""
    reason = usage.finish_reason
    if reason is not None:
        usage.finish_reason = clean_text(reason, FINISH_REASON_MAX)
    tier = usage.service_tier
    if tier is not None:
        usage.service_tier = clean_text(tier, TIER_MAX)
    return usage
