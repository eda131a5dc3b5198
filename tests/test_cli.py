"""The command line and configuration: clear failures for bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recovea_proxy.config import ConfigError, Settings


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "recovea_proxy", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_defaults_match_the_documented_ones() -> None:
    """With no variables set the gateway uses DESIGN.md's defaults."""
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.upstream_openai == "https://api.openai.com"
    assert settings.upstream_anthropic == "https://api.anthropic.com"
    assert settings.upstream_openrouter == "https://openrouter.ai/api"
    assert settings.passthrough is False
    assert settings.max_body_bytes == 32 * 1024 * 1024
    assert settings.meter_queue_max == 100_000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RECOVEA_PASSTHROUGH", "maybe", "on or off"),
        ("RECOVEA_UPSTREAM_OPENAI", "ftp://x", "http(s) URL"),
        ("RECOVEA_MAX_BODY_MB", "lots", "a number"),
        ("RECOVEA_IDLE_READ_TIMEOUT_S", "0", "at least"),
        ("RECOVEA_LOG_FORMAT", "xml", "console or json"),
        ("RECOVEA_REDIS_URL", "http://cache:6379", "redis://"),
        ("RECOVEA_REDIS_URL", "redis://cache:six/0", "not a number"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(
    name: str, value: str, message: str
) -> None:
    """A bad value names the variable and what it should be."""
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env({name: value})
    assert message in str(caught.value)


def test_serve_with_bad_config_exits_2() -> None:
    """`recovea serve` with a bad variable stops at once with exit code 2 and a clear line."""
    result = run_cli("serve", env={"RECOVEA_PASSTHROUGH": "perhaps"})
    assert result.returncode == 2
    assert "RECOVEA_PASSTHROUGH" in result.stderr


def test_a_key_pasted_into_a_setting_is_not_printed_whole() -> None:
    """A provider key pasted into the wrong variable is refused (exit 2) with the
    variable named, and the error shows the key masked to its last four characters."""
    pasted = "sk-proj-PastedIntoTheWrongVariable0123456789ABCD"
    result = run_cli("serve", env={"RECOVEA_UPSTREAM_OPENAI": pasted})
    assert result.returncode == 2
    assert "RECOVEA_UPSTREAM_OPENAI" in result.stderr
    assert "****ABCD" in result.stderr
    assert pasted not in result.stderr + result.stdout


def test_help_lists_the_commands() -> None:
    """`recovea --help` lists serve and mock-provider."""
    result = run_cli("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "mock-provider" in result.stdout


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("RECOVEA_DATABASE_URL", "postgresql://owner:s3cret@db:5432/recovea", "database_url"),
        (
            "RECOVEA_APP_DATABASE_URL",
            "postgresql://recovea_app:an0ther@db:5432/recovea",
            "app_database_url",
        ),
        ("RECOVEA_REDIS_URL", "redis://:pw@cache:6379/0", "redis_url"),
    ],
)
def test_a_secret_url_can_come_from_a_file(
    tmp_path: Path, name: str, value: str, field: str
) -> None:
    """`<name>_FILE` names a file holding the value (a mounted secret, trailing newline
    and all); setting both the variable and its _FILE is refused."""
    secret = tmp_path / "secret"
    secret.write_text(value + "\n")
    settings = Settings.from_env({f"{name}_FILE": str(secret)})
    assert value == getattr(settings, field)
    with pytest.raises(ConfigError, match="not both") as caught:
        Settings.from_env({name: value, f"{name}_FILE": str(secret)})
    assert value not in str(caught.value)
    with pytest.raises(ConfigError, match=f"{name}_FILE: cannot read"):
        Settings.from_env({f"{name}_FILE": str(tmp_path / "missing")})
