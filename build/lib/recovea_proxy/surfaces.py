"""Which provider a request path is for, and what it is called upstream.

| path                          | provider   | upstream path |
| `/v1/messages`, `/v1/messages/*` | anthropic | same       |
| other `/v1/*`                 | openai     | same          |
| `/openai/v1/*`                | openai     | `/v1/*`       |
| `/anthropic/v1/*`             | anthropic  | `/v1/*`       |
| `/openrouter/api/v1/*`        | openrouter | `/v1/*` (the base URL ends in `/api`) |

`/v1/recovea/*` belongs to the gateway itself and is not a provider surface.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovea_proxy.providers import PROVIDERS, Provider

_PREFIXES = (
    ("/openai/v1/", "openai", len("/openai")),
    ("/anthropic/v1/", "anthropic", len("/anthropic")),
    ("/openrouter/api/v1/", "openrouter", len("/openrouter/api")),
)
_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Surface:
    """A resolved provider path: everything the pipeline needs to know from the URL."""

    provider: Provider
    upstream_path: str
    kind: str
    route: str
    error_shape: str


class SurfaceMap:
    """Resolves request paths, remembering the ones it has seen (bounded)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, Surface | None] = {}

    def resolve(self, path: str) -> Surface | None:
        """The provider surface for `path`, or None when the path is not one."""
        try:
            return self._cache[path]
        except KeyError:
            pass
        surface = _resolve(path)
        if len(self._cache) < _CACHE_MAX:
            self._cache[path] = surface
        return surface


def _resolve(path: str) -> Surface | None:
    if path.startswith("/v1/"):
        if path.startswith("/v1/recovea/") or path == "/v1/recovea":
            return None
        if path == "/v1/messages" or path.startswith("/v1/messages/"):
            return _surface("anthropic", path, "")
        return _surface("openai", path, "")
    for prefix, provider, cut in _PREFIXES:
        if path.startswith(prefix):
            return _surface(provider, path[cut:], path[:cut])
    return None


def _surface(provider_name: str, upstream_path: str, mount: str) -> Surface:
    provider = PROVIDERS[provider_name]
    kind, template = provider.endpoint_of(upstream_path)
    return Surface(
        provider=provider,
        upstream_path=upstream_path,
        kind=kind,
        route=mount + template,
        error_shape=provider.error_shape,
    )
