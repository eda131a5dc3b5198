"""Which headers cross the gateway, in each direction, and the gateway's own.

Hop-by-hop headers never cross. Credentials are not forwarded as they came: auth
decides what the provider sees, and a value that starts with `rcv_` (any case), in
any header, is never forwarded. A header value that is not UTF-8 is not forwarded
either: the upstream client would re-encode it, so it could not arrive as sent.
`x-recovea-*` headers are the gateway's and stay here. Everything else passes both
ways unchanged (anthropic-version, anthropic-beta, OpenAI-Organization,
x-stainless-*, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from recovea_proxy.clean import TAG_MAX, TRACE_ID_MAX, clean_text
from recovea_proxy.errors import GatewayError

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Request headers the gateway sets itself (or lets aiohttp set) instead of forwarding.
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"accept-encoding"}
# Response headers replaced by the gateway's own.
_NOT_RETURNED = HOP_BY_HOP | {b"content-length"}
#: a stored answer's headers never replayed (nor written to Redis): hop-by-hop,
#: per-connection or per-client, and `age` (a hit says its own: how old the entry is)
NOT_REPLAYED = HOP_BY_HOP | {b"content-length", b"set-cookie", b"date", b"age"}

_HEX = frozenset(b"0123456789abcdef")
#: forwarded headers that change what the provider answers (an API version, beta
#: features that change the answer's form or reach): two requests that differ in them
#: never share an answer
ANSWER_HEADERS = frozenset({b"anthropic-version", b"anthropic-beta", b"openai-beta"})
#: forwarded headers the gateway reads as they pass (`_read_forwarded`)
_READ_FORWARDED = frozenset({b"traceparent", b"cache-control"}) | ANSWER_HEADERS
#: what `X-Recovea-Cache` may say
CACHE_DIRECTIVES = frozenset({"skip", "refresh"})


@dataclass(slots=True)
class RequestHeaders:
    """A request's headers, split into what is forwarded and what the gateway reads."""

    forward: list[tuple[str, str]]
    authorization: str | None = None
    api_key: str | None = None
    feature: str | None = None
    customer: str | None = None
    cache: str | None = None
    trace_id: str | None = None
    #: the caller's span id, when the trace id came from its `traceparent`
    parent_span_id: str | None = None
    content_length: int | None = None
    content_type: bytes | None = None
    #: the request's `Cache-Control` (lines joined by commas; it is forwarded too)
    cache_control: bytes | None = None
    #: the forwarded headers that shape the provider's answer (`ANSWER_HEADERS`), as
    #: `name: value` lines in the order they came: part of the exact cache's key
    answer_headers: bytes | None = None


def split_request_headers(raw: list[tuple[bytes, bytes]]) -> RequestHeaders:
    """Sort an ASGI header list into forwarded headers and the gateway's inputs."""
    forward: list[tuple[str, str]] = [("accept-encoding", "identity")]
    out = RequestHeaders(forward)
    extra_hop: frozenset[bytes] = frozenset()
    for name, value in raw:
        if name in _NOT_FORWARDED:
            if name == b"content-length":
                out.content_length = int(value) if value.isdigit() else None
            elif name == b"connection":
                # a list header: every line's names count, not only the last line's
                extra_hop = extra_hop.union(t.strip().lower() for t in value.split(b","))
            continue
        if name == b"authorization":
            out.authorization = value.decode("latin-1")
        elif name == b"x-api-key":
            out.api_key = value.decode("latin-1")
        elif name.startswith(b"x-recovea-"):
            _read_gateway_header(out, name, value)
        elif value[3:4] == b"_" and value[:4].lower() == b"rcv_":
            continue  # an rcv_ key in any other header never goes upstream
        else:
            if name == b"content-type":
                out.content_type = value
            elif name in _READ_FORWARDED:  # its hash is known: `_NOT_FORWARDED` took it
                _read_forwarded(out, name, value)
            try:
                # aiohttp sends header values as UTF-8: only UTF-8 crosses unchanged
                forward.append((name.decode("latin-1"), value.decode("utf-8")))
            except UnicodeDecodeError:
                continue  # not UTF-8: it could not reach the provider as sent
    if extra_hop:
        out.forward = [(n, v) for n, v in forward if n.encode("latin-1") not in extra_hop]
    return out


def clean_tag(value: bytes, limit: int = TAG_MAX) -> str | None:
    """A caller-supplied tag: invalid UTF-8 replaced, then `clean.clean_text` (control
    characters removed, anything key-shaped masked, cut to `limit`); None when
    nothing is left."""
    return clean_text(value.decode("utf-8", "replace").strip(), limit)


def _trace_id_of(traceparent: bytes) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), or None
    when the header is not one."""
    trace_id = traceparent[3:35]
    if len(trace_id) == 32 and traceparent[2:3] == b"-" and _HEX.issuperset(trace_id):
        return trace_id.decode("ascii")
    return None


def _span_id_of(traceparent: bytes) -> str | None:
    """The parent span id of a W3C `traceparent` whose trace id was read, or None."""
    span_id = traceparent[36:52]
    if len(span_id) == 16 and traceparent[35:36] == b"-" and _HEX.issuperset(span_id):
        return span_id.decode("ascii")
    return None


def _read_forwarded(out: RequestHeaders, name: bytes, value: bytes) -> None:
    """A forwarded header the gateway reads too."""
    if name == b"traceparent":
        if out.trace_id is None:  # an X-Recovea-Trace-Id before it wins
            out.trace_id = _trace_id_of(value)
            if out.trace_id is not None:
                out.parent_span_id = _span_id_of(value)
    elif name == b"cache-control":
        had = out.cache_control
        out.cache_control = value if had is None else had + b"," + value
    else:  # one of `ANSWER_HEADERS`
        line = name + b": " + value + b"\n"
        had = out.answer_headers
        out.answer_headers = line if had is None else had + line


def _read_gateway_header(out: RequestHeaders, name: bytes, value: bytes) -> None:
    if name == b"x-recovea-feature":
        out.feature = clean_tag(value)
    elif name == b"x-recovea-customer":
        out.customer = clean_tag(value)
    elif name == b"x-recovea-cache":
        cache = value.decode("latin-1").strip().lower()
        if cache not in CACHE_DIRECTIVES:
            # a typo would otherwise read as no directive at all, and share an answer
            # the caller meant to keep to itself
            raise GatewayError(
                400, "invalid_request", "X-Recovea-Cache must be `skip` or `refresh`."
            )
        out.cache = cache
    elif name == b"x-recovea-trace-id":
        # ASCII only: the trace id goes back out in a response header.
        out.trace_id = clean_text(value.decode("ascii", "ignore").strip(), TRACE_ID_MAX)
        out.parent_span_id = None  # the caller's own trace id wins over its traceparent


def response_headers(
    raw: Iterable[tuple[bytes, bytes]],
    provider_request_id: bytes,
    *,
    keep_length: bool,
) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """Upstream response headers to return, and the provider's own request id.

    The gateway's own `x-request-id` takes the place of the provider's; the provider's
    request id (its `provider_request_id` header, else its `x-request-id`) is returned
    as `x-recovea-upstream-request-id`.
    """
    out: list[tuple[bytes, bytes]] = []
    upstream_id: bytes | None = None
    fallback_id: bytes | None = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in _NOT_RETURNED:
            if keep_length and lowered == b"content-length":
                out.append((lowered, value))
            continue
        if lowered == provider_request_id:
            upstream_id = value
        if lowered == b"x-request-id":
            fallback_id = value
            continue
        out.append((lowered, value))
    upstream_id = upstream_id or fallback_id
    if upstream_id is not None:
        out.append((b"x-recovea-upstream-request-id", upstream_id))
    return out, upstream_id
