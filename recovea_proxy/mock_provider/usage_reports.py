"""The providers' admin usage and cost reports, in each provider's shape
(PROTOCOLS.md), made of what the mock served (`usage_book`):

    OpenAI     GET /v1/organization/usage/completions, GET /v1/organization/costs
               Bearer `sk-admin-…`; `start_time`/`end_time` unix seconds; `group_by`
               (model, api_key_id, project_id; costs: line_item, project_id); amounts
               in USD as JSON numbers; line items `"<model>, input"`, `"<model>, output"`
    Anthropic  GET /v1/organizations/usage_report/messages, GET
               /v1/organizations/cost_report; `x-api-key: sk-ant-admin…`;
               `starting_at`/`ending_at` RFC 3339; `group_by[]` (model, api_key_id,
               workspace_id; costs: workspace_id, description); no request count;
               amounts in cents as decimal strings

Both: daily buckets only (`bucket_width=1d`), paged by `page_size` results
(`has_more`, `next_page`, sent back as `page`). A key that is not an admin key is
refused 401, as the providers do. The switches in `usage_book` add a bypass, a token
mismatch, price drift, 429s and 500s, and malformed pages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from recovea_proxy.mock_provider.usage_book import BOOK_KEY, Served, UsageBook, reset, show, switch

_API_KEY_ID = {"openai": "key_mock0000000000", "anthropic": "apikey_01Mock000000000000"}
_PROJECT_ID = {"openai": "proj_mock0000000000", "anthropic": "wrkspc_01Mock0000000000000"}
_CENTS = Decimal(100)
Row = tuple[date, dict[str, Any]]


def _error(
    provider: str, status: int, message: str, retry_after: str | None = None
) -> web.Response:
    if provider == "anthropic":
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _admin(request: web.Request, provider: str) -> bool:
    if provider == "anthropic":
        return request.headers.get("x-api-key", "").startswith("sk-ant-admin")
    auth = request.headers.get("authorization", "")
    return auth[:7].lower() == "bearer " and auth[7:].strip().startswith("sk-admin-")


def _window(request: web.Request, provider: str) -> tuple[date, date] | None:
    """[first day, last day + 1) of the request, or None when it does not parse."""
    query = request.query
    try:
        if provider == "anthropic":
            start = datetime.fromisoformat(query["starting_at"].replace("Z", "+00:00"))
            raw_end = query.get("ending_at")
            end = (
                datetime.fromisoformat(raw_end.replace("Z", "+00:00"))
                if raw_end
                else start + timedelta(days=7)
            )
        else:
            start = datetime.fromtimestamp(int(query["start_time"]), UTC)
            raw = query.get("end_time")
            end = datetime.fromtimestamp(int(raw), UTC) if raw else start + timedelta(days=7)
    except (KeyError, ValueError):
        return None
    if query.get("bucket_width", "1d") != "1d":
        return None
    return start.astimezone(UTC).date(), end.astimezone(UTC).date()


def _groups(request: web.Request, provider: str) -> set[str]:
    name = "group_by[]" if provider == "anthropic" else "group_by"
    return set(request.query.getall(name, []))


def _bucket(provider: str, day: date, results: list[dict[str, Any]]) -> dict[str, Any]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    if provider == "anthropic":
        return {
            "starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "results": results,
        }
    return {
        "object": "bucket",
        "start_time": int(start.timestamp()),
        "end_time": int(end.timestamp()),
        "results": results,
    }


def _usage_result(provider: str, model: str, served: Served, groups: set[str]) -> dict[str, Any]:
    c = served.counts
    if provider == "anthropic":
        written = c["write_5m"] + c["write_1h"]
        return {
            "uncached_input_tokens": c["input_tokens"] - c["cached_tokens"] - written,
            "cache_creation": {
                "ephemeral_1h_input_tokens": c["write_1h"],
                "ephemeral_5m_input_tokens": c["write_5m"],
            },
            "cache_read_input_tokens": c["cached_tokens"],
            "output_tokens": c["output_tokens"],
            "server_tool_use": {"web_search_requests": 0},
            "api_key_id": _API_KEY_ID[provider] if "api_key_id" in groups else None,
            "workspace_id": _PROJECT_ID[provider] if "workspace_id" in groups else None,
            "model": model if "model" in groups else None,
            "service_tier": None,
            "context_window": None,
        }
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": c["input_tokens"],
        "output_tokens": c["output_tokens"],
        "input_cached_tokens": c["cached_tokens"],
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": c["requests"],
        "project_id": _PROJECT_ID[provider] if "project_id" in groups else None,
        "user_id": None,
        "api_key_id": _API_KEY_ID[provider] if "api_key_id" in groups else None,
        "model": model if "model" in groups else None,
        "batch": None,
    }


def _cost_results(
    provider: str, model: str, served: Served, groups: set[str]
) -> list[dict[str, Any]]:
    if served.input_cost is None or served.output_cost is None:
        return []
    out: list[dict[str, Any]] = []
    for kind, amount in (("input", served.input_cost), ("output", served.output_cost)):
        if provider == "anthropic":
            out.append(
                {
                    "currency": "USD",
                    "amount": format(amount * _CENTS, "f"),
                    "workspace_id": _PROJECT_ID[provider] if "workspace_id" in groups else None,
                    "description": f"{model} Usage - {kind.title()} Tokens"
                    if "description" in groups
                    else None,
                    "cost_type": "tokens",
                    "context_window": "0-200k",
                    "model": model if "description" in groups else None,
                    "service_tier": "standard",
                    "token_type": f"{kind}_tokens",
                }
            )
        else:
            out.append(
                {
                    "object": "organization.costs.result",
                    "amount": {"value": float(amount), "currency": "usd"},
                    "line_item": f"{model}, {kind}" if "line_item" in groups else None,
                    "project_id": _PROJECT_ID[provider] if "project_id" in groups else None,
                    "organization_id": "org-mock",
                }
            )
    return out


def _report(
    provider: str, rows: Callable[[UsageBook, date, date, set[str]], list[Row]]
) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        book = request.app[BOOK_KEY]
        if not _admin(request, provider):
            return _error(provider, 401, "This endpoint needs an admin API key.")
        failing = book.take("fail", provider)
        if failing is not None:
            status = int(failing.get("status", 500))
            return _error(provider, status, "Injected failure.", failing.get("retry_after"))
        window = _window(request, provider)
        if window is None:
            return _error(provider, 400, "Invalid time window or bucket width.")
        offset = int(request.query.get("page", "page_0").removeprefix("page_") or 0)
        if offset > 0 and book.take("malformed", provider) is not None:
            return web.Response(body=b'{"data": [{"results": [', content_type="application/json")
        found = rows(book, *window, _groups(request, provider))
        size = max(1, int(book.switches.get("page_size", 1)))
        page = found[offset : offset + size]
        buckets: dict[date, list[dict[str, Any]]] = {}
        for day, result in page:
            buckets.setdefault(day, []).append(result)
        more = offset + size < len(found)
        doc: dict[str, Any] = {
            "data": [_bucket(provider, day, results) for day, results in buckets.items()],
            "has_more": more,
            "next_page": f"page_{offset + size}" if more else None,
        }
        if provider == "openai":
            doc = {"object": "page", **doc}
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    return handler


def _usage_rows(provider: str) -> Callable[[UsageBook, date, date, set[str]], list[Row]]:
    def rows(book: UsageBook, first: date, end: date, groups: set[str]) -> list[Row]:
        return [
            (day, _usage_result(provider, model, served, groups))
            for (day, model), served in sorted(book.figures(provider).items())
            if first <= day < end
        ]

    return rows


def _cost_rows(provider: str) -> Callable[[UsageBook, date, date, set[str]], list[Row]]:
    def rows(book: UsageBook, first: date, end: date, groups: set[str]) -> list[Row]:
        return [
            (day, result)
            for (day, model), served in sorted(book.figures(provider).items())
            if first <= day < end
            for result in _cost_results(provider, model, served, groups)
        ]

    return rows


def add_routes(app: web.Application) -> None:
    """The report endpoints and their switches (before the catch-all route)."""
    app[BOOK_KEY] = UsageBook()
    routes = app.router
    routes.add_get("/_mock/usage-reports", show)
    routes.add_put("/_mock/usage-reports", switch)
    routes.add_delete("/_mock/usage-reports", reset)
    for provider, usage_path, cost_path in (
        ("openai", "/v1/organization/usage/completions", "/v1/organization/costs"),
        (
            "anthropic",
            "/v1/organizations/usage_report/messages",
            "/v1/organizations/cost_report",
        ),
    ):
        routes.add_get(usage_path, _report(provider, _usage_rows(provider)))
        routes.add_get(cost_path, _report(provider, _cost_rows(provider)))
