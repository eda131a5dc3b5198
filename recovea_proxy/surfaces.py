"""Which provider a request path is for, and what it is called upstream.

| path                          | provider   | upstream path |
| `/v1/messages`, `/v1/messages/*` | anthropic | same       |
| other `/v1/*`                 | openai, or anthropic (below) | same |
| `/openai/v1/*`                | openai     | `/v1/*`       |
| `/anthropic/v1/*`             | anthropic  | `/v1/*`       |
| `/openrouter/api/v1/*`        | openrouter | `/v1/*` (the base URL ends in `/api`) |

`/v1/recovea/*` belongs to the gateway itself and is not a provider surface.

Paths alone cannot tell Anthropic's `/v1/models` or `/v1/files` from OpenAI's: a
bare `/v1/*` request that carries `anthropic-version` (every Anthropic SDK sends it
on every call) or an Anthropic-shaped key (`x-api-key: sk-ant-…`, `Authorization:
Bearer sk-ant-…`, when no rcv_ key is beside it) is Anthropic's, whatever its path
(`for_headers`). The explicit prefixes are never re-routed.

Paths are checked on their raw bytes (as the client sent them, before any
percent-decoding) and a path that fails is never classified or forwarded: it
resolves to an invalid surface, answered with 400 `invalid_path` in the shape of
the surface it names. Refused, on every path:

- a byte outside printable ASCII, or a backslash;
- an empty segment (`//`) or a dot segment (`/./`, `/../`, a trailing `/.`);
- a malformed percent-escape, or one that encodes `/ ? # . % \\`, a control
  character, or a character that never needs encoding (letters, digits, `-_~`):
  a client encodes those only to make the gateway and the provider read the path
  differently;

and on provider surfaces also a trailing `/`. The query string must be printable
ASCII. The upstream URL is built from the checked raw path (see `Surface`), so the
provider reads exactly the path the gateway classified.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from recovea_proxy.providers import PROVIDERS, Provider

_PREFIXES = (
    (b"/openai/v1/", "openai", len("/openai")),
    (b"/anthropic/v1/", "anthropic", len("/anthropic")),
    (b"/openrouter/api/v1/", "openrouter", len("/openrouter/api")),
)
_CACHE_MAX = 4096
_HEX = frozenset(b"0123456789abcdefABCDEF")
# Decoded bytes a percent-escape may not stand for.
_NOT_ENCODABLE = (
    frozenset(b"/?#.%\\-_~")
    | frozenset(range(0x00, 0x20))
    | {0x7F}
    | frozenset(b"0123456789")
    | frozenset(range(ord("A"), ord("Z") + 1))
    | frozenset(range(ord("a"), ord("z") + 1))
)
_PRINTABLE = frozenset(range(0x21, 0x7F))
INVALID_ROUTE = "invalid_path"
_ANTHROPIC_KEY = b"sk-ant-"


@dataclass(frozen=True, slots=True)
class Surface:
    """A resolved provider path: everything the pipeline needs to know from the URL.

    `upstream_path` is the raw path as the client sent it (less the gateway's mount
    prefix), already checked; `invalid` marks a path that failed the check (it is
    answered with 400 `invalid_path` in `error_shape`, nothing else is read)."""

    provider: Provider
    upstream_path: str
    kind: str
    route: str
    error_shape: str
    invalid: bool = False
    #: whether the provider stores this endpoint's answers unless the body says
    #: `store: false` (OpenAI's Responses API)
    stores_by_default: bool = False
    #: for a bare `/v1/*` OpenAI path: the same path on Anthropic's surface
    anthropic_twin: Surface | None = None


class SurfaceMap:
    """Resolves raw request paths, remembering the ones it has seen (bounded): a path
    is checked and classified once, then costs a dict lookup."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[bytes, Surface | None] = {}

    def resolve(self, raw_path: bytes) -> Surface | None:
        """The provider surface for `raw_path` (an invalid one when the path fails the
        check), or None when the path is the gateway's own."""
        try:
            return self._cache[raw_path]
        except KeyError:
            pass
        surface = _resolve(raw_path)
        if len(self._cache) < _CACHE_MAX:
            self._cache[raw_path] = surface
        return surface


def for_headers(surface: Surface, headers: list[tuple[bytes, bytes]]) -> Surface:
    """The surface a bare `/v1/*` path names for these request headers: its Anthropic
    twin when they carry `anthropic-version`, or an Anthropic-shaped key and no rcv_
    key (an rcv_ key wins auth, so a provider key beside it says nothing)."""
    twin = surface.anthropic_twin
    if twin is None:
        return surface
    anthropic_key = rcv_key = False
    for name, value in headers:
        if name == b"anthropic-version":
            return twin
        if name == b"x-api-key":
            credential = value.strip()
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            credential = value[7:].strip()
        else:
            continue
        if credential.startswith(_ANTHROPIC_KEY):
            anthropic_key = True
        elif credential[:4].lower() == b"rcv_":
            rcv_key = True
    return twin if anthropic_key and not rcv_key else surface


def query_is_clean(query: bytes) -> bool:
    """Whether a query string holds only printable ASCII."""
    return not query or (query.isascii() and _PRINTABLE.issuperset(query))


def _resolve(raw: bytes) -> Surface | None:
    ok = path_is_clean(raw)
    if raw.startswith(b"/v1/"):
        if raw.startswith(b"/v1/recovea/") or raw == b"/v1/recovea":
            return None if ok else _invalid("openai")
        if raw == b"/v1/messages" or raw.startswith(b"/v1/messages/"):
            return _surface("anthropic", raw, 0) if ok else _invalid("anthropic")
        if not ok:
            return _invalid("openai")
        openai = _surface("openai", raw, 0)
        if openai.invalid:
            return openai
        return replace(openai, anthropic_twin=_surface("anthropic", raw, 0))
    for prefix, provider, cut in _PREFIXES:
        if raw.startswith(prefix):
            return _surface(provider, raw, cut) if ok else _invalid(provider)
    if ok:
        return None
    return _invalid("anthropic" if raw.startswith(b"/anthropic/") else "openai")


def path_is_clean(raw: bytes) -> bool:
    """The checks every path must pass (see the module docstring)."""
    if raw[:1] != b"/" or not raw.isascii() or not _PRINTABLE.issuperset(raw):
        return False
    if b"//" in raw or b"\\" in raw:
        return False
    if b"/." in raw:
        for segment in raw.split(b"/"):
            if segment in (b".", b".."):
                return False
    at = raw.find(b"%")
    while at >= 0:
        escape = raw[at + 1 : at + 3]
        if len(escape) != 2 or not _HEX.issuperset(escape):
            return False
        if int(escape, 16) in _NOT_ENCODABLE:
            return False
        at = raw.find(b"%", at + 3)
    return True


def _surface(provider_name: str, raw: bytes, cut: int) -> Surface:
    if raw.endswith(b"/"):
        return _invalid(provider_name)
    provider = PROVIDERS[provider_name]
    upstream_path = raw[cut:].decode("ascii")
    kind, template = provider.endpoint_of(upstream_path)
    return Surface(
        provider=provider,
        upstream_path=upstream_path,
        kind=kind,
        route=raw[:cut].decode("ascii") + template,
        error_shape=provider.error_shape,
        stores_by_default=kind in provider.stores_by_default,
    )


def _invalid(provider_name: str) -> Surface:
    provider = PROVIDERS[provider_name]
    return Surface(
        provider=provider,
        upstream_path="",
        kind="",
        route=INVALID_ROUTE,
        error_shape=provider.error_shape,
        invalid=True,
    )
