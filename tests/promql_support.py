"""Helpers for the Prometheus tests: the metric selectors a PromQL expression names,
the shipped rules and dashboard expressions, and a real `prometheus` process.

The selector parser is deliberately small: it reads the PromQL our rules and
dashboard are written in (functions, aggregations with `by`/`without`, label
matchers, ranges, Grafana's `$__rate_interval`), not every corner of the language.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from tests.support import free_port, wait_until

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "recovea.json"

_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    }
)
_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_MATCHERS = re.compile(r"\{(?:[^{}\"']|" + _STRING + r")*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def selectors(expr: str) -> list[tuple[str, str]]:
    """The metric selectors of `expr`: (metric name, its label matchers or "")."""
    # Every step blanks what it removes with as many spaces, so positions hold.
    text = re.sub(r"\$\{?\w+\}?", _spaces, expr)  # Grafana variables ($__rate_interval)
    text = _GROUPING.sub(_spaces, text)
    found: list[tuple[str, str]] = []
    matchers: dict[int, str] = {}

    def keep(match: re.Match[str]) -> str:
        matchers[match.start()] = match.group(0)
        return _spaces(match)

    text = _MATCHERS.sub(keep, text)
    text = re.sub(r"\[[^\]]*\]", _spaces, text)
    text = re.sub(_STRING, _spaces, text)
    for match in _IDENT.finditer(text):
        name = match.group(1)
        if name.lower() in _KEYWORDS:
            continue
        after = match.end()
        while after < len(text) and text[after] == " " and after not in matchers:
            after += 1
        found.append((name, matchers.get(after, "")))
    return found


def _spaces(match: re.Match[str]) -> str:
    return " " * len(match.group(0))


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` reads."""
    return {name for name, _ in selectors(expr)}


def rule_expressions() -> dict[str, str]:
    """Each alert of the shipped rules, by name: its expression."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> dict[str, list[str]]:
    """Each panel of the shipped dashboard (rows aside), by title: its queries'
    expressions."""
    board = orjson.loads(DASHBOARD.read_bytes())
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in _panels(board["panels"])
        if panel["type"] != "row"
    }


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics text declares: its samples' names, and for each
    family (a labelled one may have no sample yet) the names its type gives it."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        suffixes = _SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def rules_without_waiting(target: Path) -> Path:
    """The shipped rules with every `for:` set to 0s (a test cannot wait minutes)."""
    target.write_text(re.sub(r"(?m)^(\s+for:)\s*\S+", r"\1 0s", RULES.read_text()))
    return target


class Prometheus:
    """A real `prometheus` scraping `targets` every second, evaluating `rules` every
    second; its own port and storage under `workdir`."""

    def __init__(self, workdir: Path, targets: list[str], rules: Path | None = None) -> None:
        self.dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)] if rules else [],
            "scrape_configs": [{"job_name": "recovea", "static_configs": [{"targets": targets}]}],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                _binary("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready, 30, "prometheus to be ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError((self.dir / "prometheus.log").read_text(errors="replace"))
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def firing(self) -> set[str]:
        """The names of the alerts firing now."""
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=5)
        answer.raise_for_status()
        return {
            alert["labels"]["alertname"]
            for alert in answer.json()["data"]["alerts"]
            if alert["state"] == "firing"
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (apt-get install -y prometheus; .ci/run does it)"
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `promtool ARGS` (output captured)."""
    return subprocess.run([_binary("promtool"), *args], capture_output=True, text=True, timeout=60)
