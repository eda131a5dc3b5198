"""What the gateway says when it has started: where it listens, passthrough on or off,
where the ledger lives, the upstreams, the usage page and /metrics.

On a console these are a few lines a person reads; in JSON they are the fields of
the `gateway_started` event. Library chatter (pgserver's commands, uvicorn's
lifecycle lines) is logged at debug level instead (`observability.logging`).
A database URL is shown without its password.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from recovea_proxy.config import Settings
from recovea_proxy.observability.redact import redact_text
from recovea_proxy.store.embedded import PG_SUBDIR


def startup_facts(settings: Settings, upstreams: dict[str, str]) -> dict[str, Any]:
    """The facts start-up reports, as event fields."""
    base = f"http://{settings.host}:{settings.port}"
    return {
        "listen": base,
        "passthrough": settings.passthrough,
        "ledger": ledger_location(settings),
        "upstreams": upstreams,
        "ui": f"{base}/ui/",
        "metrics": f"{base}/metrics",
    }


def ledger_location(settings: Settings) -> str:
    """Where the ledger lives, in words, never with a password."""
    if settings.database_url is None:
        pg_dir = (settings.data_dir / PG_SUBDIR).resolve()
        return f"embedded Postgres in {pg_dir}"
    parts = urlsplit(settings.database_url)
    host = parts.hostname or ",".join(parse_qs(parts.query).get("host", [])) or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"Postgres {user}{host}{port}{parts.path or '/'}"


def banner_lines(facts: dict[str, Any]) -> list[str]:
    """The console lines for `facts`."""
    if facts["passthrough"]:
        passthrough = "on: requests with a provider's own key are forwarded and metered"
    else:
        passthrough = "off: requests need an rcv_ key"
    ledger = facts["ledger"]
    if ledger.startswith("embedded"):
        ledger += " (stopped with the gateway when no other process uses it)"
    upstreams = ", ".join(f"{name} {url}" for name, url in facts["upstreams"].items())
    return [
        f"Recovea gateway on {facts['listen']} (Ctrl-C stops it)",
        f"  passthrough  {passthrough}",
        f"  ledger       {ledger}",
        f"  upstreams    {upstreams}",
        f"  usage page   {facts['ui']}",
        f"  metrics      {facts['metrics']}",
    ]


def print_banner(facts: dict[str, Any]) -> None:
    """Write the console lines on stdout."""
    text = "\n".join(redact_text(line) for line in banner_lines(facts))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
