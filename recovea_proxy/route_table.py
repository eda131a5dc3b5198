"""A workspace's routing rules, compiled: plain, immutable data that the key lookup
builds once per key resolution and the routing lever reads.

A rule matches a request on its surface's provider, its route template, its model
(exactly as the caller sent it), its `X-Recovea-Feature` and its key's env; every
condition but the model may be left out (matches anything). The compiled table is a
dict keyed by (surface provider, model) holding that key's rules, most specific
first (then oldest first); a lookup costs one dict probe and a few comparisons, never
a scan of the workspace's rules.

A rule's plan for a surface is its targets in order: `to`, each fallback, then the
caller's model on the caller's provider, each (provider, model) once. A rule whose
`provider` is not the surface's applies only where no wire translation is needed:
between OpenAI's and OpenRouter's surfaces (one wire format); the admin refuses a
rule that would need more, and the compiler never files one under a surface it
cannot serve.

A new rule set is a new table: a request holds the table it started with, so none
ever sees a half-written set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from recovea_proxy.pricing.table import shipped_prices

PROVIDER_NAMES = ("openai", "anthropic", "openrouter")
#: providers that speak one wire format (a rule may route between them)
OPENAI_FORMAT = frozenset({"openai", "openrouter"})
#: the model label of a target whose name is not in the shipped price table
OTHER_MODEL = "other"


def compatible(surface: str, provider: str) -> bool:
    """Whether a request on `surface` can be served on `provider` without translation."""
    return surface == provider or (surface in OPENAI_FORMAT and provider in OPENAI_FORMAT)


@cache
def _priced_names() -> frozenset[str]:
    return frozenset(shipped_prices().entries())


def model_label(model: str) -> str:
    """A bounded metric label for a model: its name when the shipped price table lists
    it exactly, else `other`."""
    return model if model in _priced_names() else OTHER_MODEL


@dataclass(frozen=True, slots=True)
class Target:
    """One place a routed request may be served."""

    provider: str
    model: str
    #: the model's metric label (bounded)
    label: str


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Where a matched request goes, in order; the caller's model is always last."""

    rule_id: str
    targets: tuple[Target, ...]
    #: mixed into the cache and flight keys: requests share answers only within a plan
    key: str
    #: the share of the rule's requests shadow evaluation samples (0: off)
    shadow: float


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule as stored."""

    id: str
    model: str
    to: str
    surface: str | None = None
    path: str | None = None
    feature: str | None = None
    env: str | None = None
    provider: str | None = None
    fallbacks: tuple[str, ...] = ()
    shadow: float = 0.0

    @property
    def specificity(self) -> int:
        return sum(v is not None for v in (self.surface, self.path, self.feature, self.env))

    def plan_for(self, surface: str) -> RoutePlan | None:
        """The rule's plan for requests on `surface`; None when it cannot serve them
        (another wire format) or changes nothing."""
        provider = self.provider or surface
        if not compatible(surface, provider):
            return None
        seen: set[tuple[str, str]] = {(surface, self.model)}
        routed: list[Target] = []
        for model in (self.to, *self.fallbacks):
            if (provider, model) not in seen:
                seen.add((provider, model))
                routed.append(Target(provider, model, model_label(model)))
        if not routed:
            return None
        targets = (*routed, Target(surface, self.model, model_label(self.model)))
        key = "\n".join(f"{t.provider}:{t.model}" for t in targets)
        return RoutePlan(self.id, targets, key, self.shadow)


#: (path, feature, env, plan) of one rule under one (surface, model)
_Candidate = tuple[str | None, str | None, str | None, RoutePlan]


class RouteTable:
    """A workspace's rules, compiled (immutable once built)."""

    __slots__ = ("_by_key", "rules")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        ordered = sorted(enumerate(self.rules), key=lambda item: (-item[1].specificity, item[0]))
        by_key: dict[tuple[str, str], list[_Candidate]] = {}
        for _, rule in ordered:
            for surface in (rule.surface,) if rule.surface else PROVIDER_NAMES:
                plan = rule.plan_for(surface)
                if plan is not None:
                    candidate = (rule.path, rule.feature, rule.env, plan)
                    by_key.setdefault((surface, rule.model), []).append(candidate)
        self._by_key = {key: tuple(found) for key, found in by_key.items()}

    def match(
        self, surface: str, path: str, model: str, feature: str | None, env: str | None
    ) -> RoutePlan | None:
        """The plan of the first rule that matches the request; None when none does."""
        candidates = self._by_key.get((surface, model))
        if candidates is None:
            return None
        for rule_path, rule_feature, rule_env, plan in candidates:
            if (
                (rule_path is None or rule_path == path)
                and (rule_feature is None or rule_feature == feature)
                and (rule_env is None or rule_env == env)
            ):
                return plan
        return None


def rule_from_json(item: Mapping[str, Any]) -> Rule:
    """A rule from the key lookup's JSON (`recovea.workspace_routes`)."""
    return Rule(
        id=str(item["id"]),
        model=item["match_model"],
        to=item["to"],
        surface=item.get("match_surface"),
        path=item.get("match_path"),
        feature=item.get("feature"),
        env=item.get("env"),
        provider=item.get("provider"),
        fallbacks=tuple(item.get("fallbacks") or ()),
        shadow=float(item.get("shadow") or 0.0),
    )


def compile_rules(items: Iterable[Mapping[str, Any]]) -> RouteTable | None:
    """The compiled table of a workspace's rules; None when it has none."""
    rules = [rule_from_json(item) for item in items]
    return RouteTable(rules) if rules else None
