"""deploy/compose.yaml, its nginx and Postgres files, the Dockerfile and the lock, checked
without Docker (no daemon runs here): every gateway-image service runs a real `recovea`
command with documented variables, secrets come from files, the proxy and Prometheus
see every replica, and the image installs the pinned runtime dependencies."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from recovea_proxy.cli import build_parser
from recovea_proxy.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
IMAGE = "recovea:latest"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def recovea_services() -> dict[str, dict[str, Any]]:
    """The services that run the gateway's image."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == IMAGE
    }


def gateways() -> list[str]:
    return sorted(
        name for name, service in recovea_services().items() if service["command"][1] == "serve"
    )


def documented_variables() -> set[str]:
    return set(re.findall(r"`(RECOVEA_[A-Z0-9_]+)`", (ROOT / "docs/configuration.md").read_text()))


def test_the_stack_has_replicas_a_proxy_postgres_redis_prometheus_and_a_setup_job() -> None:
    """Two or more gateway replicas and a one-shot `recovea migrate`, all on the same
    image (built once, by the setup service), beside Postgres, Redis, nginx and
    Prometheus."""
    services = compose()["services"]
    ours = recovea_services()
    assert len(gateways()) >= 2
    assert [["recovea", "migrate"]] == [
        s["command"] for s in ours.values() if s["command"][1] != "serve"
    ]
    assert [n for n, s in ours.items() if "build" in s] == ["setup"]
    assert ours["setup"]["build"]["dockerfile"] == "Dockerfile"
    images = {name: str(s.get("image", "")) for name, s in services.items()}
    assert images["postgres"].startswith("postgres:")
    assert images["redis"].startswith("redis:")
    assert images["proxy"].startswith("nginx:")
    assert images["prometheus"].startswith("prom/prometheus:")
    for name in gateways():
        assert services[name]["depends_on"]["setup"]["condition"] == (
            "service_completed_successfully"
        )


@pytest.mark.parametrize("service", sorted(recovea_services()))
def test_each_command_is_one_the_cli_accepts(service: str) -> None:
    """The command of every gateway-image service parses with `recovea`'s own parser."""
    command = recovea_services()[service]["command"]
    assert command[0] == "recovea"
    try:
        build_parser().parse_args(command[1:])
    except SystemExit as exc:
        raise AssertionError(f"{service}: recovea refuses {command}") from exc


@pytest.mark.parametrize("service", sorted(recovea_services()))
def test_each_variable_is_documented_and_secrets_come_from_files(service: str) -> None:
    """Every RECOVEA_ variable a service sets is in docs/configuration.md; each *_FILE
    names a secret the service mounts (a file in deploy/secrets, not a literal); no
    value carries a password."""
    spec = recovea_services()[service]
    env: dict[str, str] = spec["environment"]
    assert set(env) <= documented_variables(), set(env) - documented_variables()
    secrets = compose()["secrets"]
    for name, value in env.items():
        assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"{name} holds a password"
        if name.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            assert value == f"/run/secrets/{secret}" and secret in spec["secrets"], name
            assert secrets[secret]["file"].startswith("./secrets/"), secret
    for secret_url in ("RECOVEA_DATABASE_URL", "RECOVEA_APP_DATABASE_URL"):
        assert secret_url not in env and f"{secret_url}_FILE" in env


def test_postgres_takes_its_passwords_from_secrets() -> None:
    """The Postgres service reads its password from a secret file, and the init script
    creates the gateway's role with the app password from another."""
    postgres = compose()["services"]["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    script = (DEPLOY / "postgres" / "app-role.sh").read_text()
    assert "/run/secrets/app_db_password" in script
    assert "NOSUPERUSER NOBYPASSRLS" in script
    assert subprocess.run(["sh", "-n", str(DEPLOY / "postgres" / "app-role.sh")]).returncode == 0


def test_the_proxy_and_prometheus_see_every_replica() -> None:
    """nginx balances over every gateway service and Prometheus scrapes each one
    directly, with the shipped rules mounted beside its config."""
    expected = [f"{name}:8080" for name in gateways()]
    nginx = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert expected == re.findall(r"^\s*server\s+(\S+);", nginx, re.MULTILINE)
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert expected == job["static_configs"][0]["targets"]
    assert scrape["rule_files"] == ["rules.yml"]
    prometheus = compose()["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]


def test_make_secrets_writes_what_the_settings_read(tmp_path: Path) -> None:
    """deploy/make-secrets.sh writes every secret compose mounts; the gateway's settings
    read the URLs through their _FILE variables and the master key is 32 bytes."""
    out = tmp_path / "secrets"
    done = subprocess.run(
        ["sh", str(DEPLOY / "make-secrets.sh"), str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == set(compose()["secrets"])
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in out.iterdir())
    assert len((out / "master_key").read_bytes()) == 32
    env = recovea_services()["gateway-1"]["environment"]
    files = {k: v.replace("/run/secrets", str(out)) for k, v in env.items() if k.endswith("_FILE")}
    settings = Settings.from_env({**env, **files})
    owner = (out / "postgres_password").read_text()
    app = (out / "app_db_password").read_text()
    assert settings.database_url == f"postgresql://recovea:{owner}@postgres:5432/recovea"
    assert settings.app_database_url == f"postgresql://recovea_app:{app}@postgres:5432/recovea"
    assert settings.master_key_file == out / "master_key"


def test_the_lock_pins_every_runtime_dependency_and_the_image_installs_from_it() -> None:
    """requirements.lock pins (==) each of pyproject's runtime dependencies at a version
    its specifier allows; the Dockerfile installs the lock, then the package with
    --no-deps."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    environment = default_environment()
    for line in project["dependencies"]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(environment):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements.lock" in dockerfile
    assert "pip install --no-cache-dir --no-deps ." in dockerfile
