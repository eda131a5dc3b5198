"""The providers the gateway speaks to, by name; one module each."""

from __future__ import annotations

from recovea_proxy.providers import anthropic, openai, openrouter
from recovea_proxy.providers.base import Provider

PROVIDERS: dict[str, Provider] = {
    p.name: p for p in (openai.PROVIDER, anthropic.PROVIDER, openrouter.PROVIDER)
}

__all__ = ["PROVIDERS", "Provider"]
