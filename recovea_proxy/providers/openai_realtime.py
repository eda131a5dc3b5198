"""OpenAI's WebSocket events: what the event that ends a response says about it.

Realtime (`/v1/realtime`): the server's `response.done` carries the whole response:

| field of `response`                      | Usage              |
| `usage.input_tokens`                     | `input_tokens` (cached ones included) |
| `usage.output_tokens`                    | `output_tokens`    |
| `usage.input_token_details.cached_tokens`| `cached_tokens`    |
| (not reported)                           | `reasoning_tokens` None |
| `status` (completed, cancelled, incomplete, | `finish_reason` (an incomplete one's |
|  failed)                                  |  `status_details.reason`) |

`failed` is an error; every status is a normal end (`terminal`). The Responses API's
WebSocket mode ends each response with the same events its SSE stream does
(`response.completed`, `response.incomplete`, `response.failed`), read as there.
"""

from __future__ import annotations

from typing import Any

from recovea_proxy.providers.openai import response_outcome
from recovea_proxy.providers.usage import Usage, as_count, nested_count

#: the event that ends a Realtime response
REALTIME_DONE = frozenset({"response.done"})
#: the events that end a response in the Responses API's WebSocket mode
RESPONSES_DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})


def realtime_outcome(response: Any, usage: Usage) -> None:
    """Usage, finish reason and outcome of a Realtime `response.done`'s `response`."""
    if not isinstance(response, dict):
        return
    counts = response.get("usage")
    if isinstance(counts, dict):
        usage.input_tokens = as_count(counts.get("input_tokens"))
        usage.output_tokens = as_count(counts.get("output_tokens"))
        usage.cached_tokens = nested_count(counts, "input_token_details", "cached_tokens")
    status = response.get("status")
    details = response.get("status_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if status == "incomplete" and isinstance(reason, str) and reason:
        usage.finish_reason = reason
    elif isinstance(status, str):
        usage.finish_reason = status
    if status == "failed":
        usage.error = True
    if status in ("completed", "cancelled", "incomplete", "failed"):
        usage.terminal = True


def ending_outcome(event_type: str, response: Any, usage: Usage) -> None:
    """Fill `usage` from the event that ended a response, in either mode."""
    if event_type in REALTIME_DONE:
        realtime_outcome(response, usage)
    else:
        response_outcome(response, usage)
