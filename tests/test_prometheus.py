"""The shipped Prometheus files (deploy/prometheus) and Grafana dashboard
(deploy/grafana): valid for promtool, naming only metrics the gateway exports, and
alerting on a real fault when a real `prometheus` scrapes a real gateway."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAKE_OPENAI_KEY, upstream_env
from tests.promql_support import (
    RULES,
    Prometheus,
    dashboard_expressions,
    exported_names,
    metric_names,
    promtool,
    rule_expressions,
    rules_without_waiting,
    selectors,
)
from tests.support import Gateway, MockServer, Postgres, short_tmpdir, wait_until
from tests.test_drain import postgres_processes

#: series Prometheus itself adds to every scrape
PROMETHEUS_OWN = frozenset({"up"})

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "prometheus"}]}


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    """`promtool check rules` validates the rules; `promtool test rules` runs the cases
    in rules_test.yml (series in, alerts out) and they all pass."""
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULES.with_name("rules_test.yml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = promtool("check", "config", str(RULES.with_name("prometheus.yml")))
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_expression_parser_finds_metric_names_only() -> None:
    """Functions, aggregation labels, ranges, strings and Grafana variables are not
    taken for metric names; label matchers stay with their metric."""
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{x=~"$v"}'
        "[$__rate_interval]))) / on (instance) group_left b_total + 1e3 * c:d"
        ' + label_replace(e, "f", "$1", "g", "(.*)")'
    )
    assert {"a_bucket", "b_total", "c:d", "e"} == metric_names(expr)
    assert [("up", '{job="recovea"}')] == selectors('up{job="recovea"} == 0')


def test_every_rule_and_panel_names_only_metrics_the_gateway_exports(
    gateway: Gateway,
) -> None:
    """Each metric name in rules.yml and in the Grafana dashboard is a sample name of
    a live /metrics scrape (histogram and counter suffixes included), a series
    Prometheus adds itself, or a spend-cap metric from the caps branch."""
    sent = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=BODY,
        headers={"authorization": f"Bearer {FAKE_OPENAI_KEY}"},
        timeout=30,
    )
    assert sent.status_code == 200, sent.text
    exported = exported_names(gateway.metrics()) | PROMETHEUS_OWN
    used = {f"rule {name}": metric_names(expr) for name, expr in rule_expressions().items()}
    for title, exprs in dashboard_expressions().items():
        used[f"panel {title!r}"] = set().union(*(metric_names(e) for e in exprs))
    assert all(used.values()), [where for where, names in used.items() if not names]
    unknown = {where: sorted(names - exported) for where, names in used.items() if names - exported}
    assert {} == unknown


@pytest.mark.timeout(90)
def test_prometheus_scrapes_a_gateway_and_a_frozen_database_fires_the_alerts(
    mock: MockServer, own_postgres: Postgres, workdir: Path
) -> None:
    """A real prometheus scrapes a gateway every second with the shipped rules (their
    `for:` set to 0s): every selector the rules use returns data; then the database is
    frozen (SIGSTOP), a request on an unknown key is refused 503 auth_unavailable and a
    served request's ledger row goes to the spool, and RecoveaAuthUnavailable and
    RecoveaLedgerSpooling fire."""
    env = {
        **upstream_env(mock),
        "RECOVEA_DATABASE_URL": own_postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(workdir / "master.key"),
        "RECOVEA_AUTH_TIMEOUT_S": "0.5",
    }
    gateway = Gateway(env, workdir)
    prom_dir = short_tmpdir()
    prometheus: Prometheus | None = None
    frozen: list[int] = []
    try:
        client = httpx.Client(base_url=gateway.url, timeout=30)
        passthrough = {"authorization": f"Bearer {FAKE_OPENAI_KEY}"}
        assert client.post("/v1/chat/completions", json=BODY, headers=passthrough).is_success
        prometheus = Prometheus(
            prom_dir,
            [f"127.0.0.1:{gateway.port}"],
            rules_without_waiting(prom_dir / "rules.yml"),
        )
        wanted = {
            f"{name}{matchers}"
            for expr in rule_expressions().values()
            for name, matchers in selectors(expr)
        }
        live = prometheus

        def missing() -> set[str]:
            return {selector for selector in wanted if not live.query(selector)}

        wait_until(lambda: not missing(), 20, "every selector of the rules to have data")
        assert live.query('up{job="recovea"}')[0]["value"][1] == "1"
        assert not live.firing() & {"RecoveaAuthUnavailable", "RecoveaLedgerSpooling"}

        frozen = postgres_processes(own_postgres)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        unknown = {"authorization": "Bearer rcv_live_" + "Q" * 43}
        refused = client.post("/v1/chat/completions", json=BODY, headers=unknown)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "auth_unavailable"
        assert client.post("/v1/chat/completions", json=BODY, headers=passthrough).is_success
        wait_until(
            lambda: {"RecoveaAuthUnavailable", "RecoveaLedgerSpooling"} <= live.firing(),
            45,
            "the alerts of a frozen database to fire",
        )
        client.close()
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        if prometheus is not None:
            prometheus.stop()
        gateway.stop()
        shutil.rmtree(prom_dir, ignore_errors=True)
