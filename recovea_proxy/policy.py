"""What a workspace has chosen for its levers: plain data that the key store returns
with a resolved key and the lever chain is chosen by.

It sits below both auth (which loads it) and the levers (which read it), so neither
imports the other.

| field | values | default |
| --- | --- | --- |
| `cache` | `off`, `deterministic` (`temperature` 0 or a `seed`), `all` | `deterministic` |
| `cache_ttl_s` | seconds an answer may be served from the cache | 3600 |
| `cache_tool_calls` | whether answers that are tool calls may be cached | false |
| `cache_generation` | part of every cache key: `recovea cache purge` raises it | 0 |
| `routes` | the workspace's routing rules, compiled (`route_table`) | none |
| `slim` | lossless request trimming (`levers.slim`) | false |

The exact cache and singleflight share the one eligibility: `cache` off turns off
both. Passthrough requests (a caller's own provider key) are served with both off:
the gateway cannot tell its callers apart, so it must not share answers among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recovea_proxy.route_table import RouteTable

CACHE_POLICIES = ("off", "deterministic", "all")
CACHE_TTL_MAX_S = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class LeverPolicy:
    """One workspace's lever settings (hashable: chains are built once per policy)."""

    cache: str = "deterministic"
    cache_ttl_s: int = 3600
    cache_tool_calls: bool = False
    #: part of every cache key of the workspace: raised, its stored answers are
    #: unreachable (`recovea cache purge`)
    cache_generation: int = 0
    #: whether the workspace has routing rules (the chain then holds the routing lever)
    routing: bool = False
    #: the rules themselves: left out of equality, so that one chain serves every rule
    #: set (the lever reads the request's own table)
    routes: RouteTable | None = field(default=None, compare=False)
    #: lossless request trimming (the slim lever), opt-in
    slim: bool = False


DEFAULT_POLICY = LeverPolicy()
PASSTHROUGH_POLICY = LeverPolicy(cache="off")
