"""Settings: every environment variable the gateway reads, parsed once at startup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration variable has a value the gateway cannot use."""


def _flag(env: Mapping[str, str], name: str, default: str) -> bool:
    raw = env.get(name, default).strip().lower()
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no", ""):
        return False
    raise ConfigError(f"{name} must be on or off, not {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {raw!r}")
    return value


def _rate(env: Mapping[str, str], name: str, default: float) -> float:
    """A number strictly between 0 and 1."""
    value = _number(env, name, default)
    if not 0 < value < 1:
        raise ConfigError(f"{name} must be between 0 and 1, not {value!r}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    """A whole number, at least `minimum`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or int(raw) < minimum:
        raise ConfigError(f"{name} must be a whole number, at least {minimum}, not {raw!r}")
    return int(raw)


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be {' or '.join(choices)}, not {raw!r}")
    return raw


def _secret(env: Mapping[str, str], name: str) -> str:
    """`name`'s value, or the contents of the file `<name>_FILE` names (a mounted
    secret; one trailing newline and surrounding spaces dropped); "" when neither is
    set. Never both: which one is meant would be a guess."""
    direct = env.get(name, "").strip()
    path = env.get(name + "_FILE", "").strip()
    if not path:
        return direct
    if direct:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path} ({type(exc).__name__})") from None


def _optional_pg_url(env: Mapping[str, str], name: str) -> str | None:
    raw = _secret(env, name)
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{name} must be a postgresql:// URL")
    return raw


def _optional_redis_url(env: Mapping[str, str], name: str) -> str | None:
    raw = _secret(env, name)
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name} must be a redis:// (or rediss://, unix://) URL")
    try:
        urlsplit(raw).port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{name} has a port that is not a number") from None
    return raw


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, default).strip().rstrip("/")
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, not {raw!r}")
    return raw


def _traces_url(env: Mapping[str, str], name: str) -> str | None:
    """An OTLP/HTTP endpoint: a base (`http://collector:4318`, to which `/v1/traces` is
    added) or the full traces URL; None when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    url = _url(env, name, raw)
    return url if url.endswith("/v1/traces") else url + "/v1/traces"


@dataclass(frozen=True, slots=True)
class Settings:
    """The gateway's configuration; see docs/configuration.md for each field."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".recovea")
    database_url: str | None = None
    app_database_url: str | None = None
    master_key_file: Path | None = None
    kms_key_id: str | None = None
    data_key_cache_ttl_s: float = 300.0
    data_key_max_uses: int = 100_000
    workspace_data_key_ttl_s: float = 60.0
    key_cache_ttl_s: float = 60.0
    key_negative_ttl_s: float = 5.0
    upstream_openai: str = "https://api.openai.com"
    upstream_anthropic: str = "https://api.anthropic.com"
    upstream_openrouter: str = "https://openrouter.ai/api"
    passthrough: bool = False
    max_body_bytes: int = 32 * 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024
    connect_timeout_s: float = 10.0
    first_byte_timeout_s: float = 600.0
    idle_read_timeout_s: float = 300.0
    upstream_max_connections: int = 1000
    upstream_pool_wait_s: float = 5.0
    shutdown_grace_s: float = 30.0
    max_header_count: int = 100
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    max_connections: int = 10_000
    max_in_flight: int = 4096
    auth_timeout_s: float = 2.0
    key_cache_max: int = 100_000
    key_negative_cache_max: int = 10_000
    log_format: str = "json"
    log_level: str = "info"
    meter_queue_max: int = 100_000
    meter_batch_max: int = 5000
    meter_flush_interval_s: float = 1.0
    meter_spool_max_mb: float = 256.0
    meter_dead_letter_max_mb: float = 64.0
    #: `each` (every receipt signed on the hot path) or `checkpoint` (chain heads signed
    #: off it, every `receipt_checkpoint_every` receipts or `receipt_checkpoint_ms`)
    receipt_signing: str = "each"
    receipt_checkpoint_every: int = 1000
    receipt_checkpoint_ms: int = 1000
    maintenance_interval_s: float = 300.0
    maintenance_timeout_s: float = 120.0
    rollup_max_tags: int = 1000
    redis_url: str | None = None
    cache_max_mb: float = 256.0
    cache_entry_max_kb: float = 4096.0
    cache_budget_ms: float = 50.0
    flight_buffer_max_kb: float = 8192.0
    flight_followers_max: int = 100
    flight_first_byte_wait_s: float = 30.0
    route_max_attempts: int = 3
    route_retry_after_max_s: float = 2.0
    route_peek_max_kb: float = 64.0
    shadow_queue_max: int = 64
    shadow_workers: int = 2
    shadow_capture_max_kb: float = 512.0
    shadow_timeout_s: float = 120.0
    shadow_daily_usd: float = 5.0
    shadow_margin: float = 0.05
    shadow_min_sample: int = 30
    shadow_chrf_min: float = 0.5
    shadow_length_ratio_max: float = 2.0
    ws_max_frame_bytes: int = 16 * 1024 * 1024
    ws_heartbeat_s: float = 20.0
    limit_window_s: float = 60.0
    limit_lease_s: float = 1.0
    limit_lease_share: float = 0.05
    limit_redis_timeout_ms: float = 100.0
    limit_default_max_tokens: int = 1024
    limits_refresh_s: float = 60.0
    security_contact: str = "mailto:security@example.invalid"
    reconcile_interval_s: float = 3600.0
    reconcile_days: int = 7
    reconcile_settle_hours: float = 48.0
    reconcile_timeout_s: float = 30.0
    reconcile_attempts: int = 3
    reconcile_retry_base_s: float = 2.0
    reconcile_retry_after_max_s: float = 60.0
    reconcile_tolerance_pct: float = 1.0
    cap_lease_fraction: float = 0.1
    cap_lease_ttl_s: float = 30.0
    cap_staleness_s: float = 10.0
    cap_sync_interval_s: float = 2.0
    cap_check_timeout_s: float = 0.25
    cap_default_output_tokens: int = 4096
    cap_config_refresh_s: float = 60.0
    #: OTLP/HTTP traces URL (`…/v1/traces`); None: no spans are built or sent
    otel_endpoint: str | None = None
    otel_service_name: str = "recovea"
    otel_queue_max: int = 4096
    otel_batch_max: int = 512
    otel_flush_interval_s: float = 1.0
    otel_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every RECOVEA_* variable, falling back to the documented defaults."""
        env = os.environ if env is None else env
        log_format = env.get("RECOVEA_LOG_FORMAT", "").strip().lower()
        if not log_format:
            log_format = "console" if _stdout_is_tty() else "json"
        if log_format not in ("console", "json"):
            raise ConfigError(f"RECOVEA_LOG_FORMAT must be console or json, not {log_format!r}")
        data_dir = Path(env.get("RECOVEA_DATA_DIR", ".recovea"))
        return cls(
            host=env.get("RECOVEA_HOST", "127.0.0.1"),
            port=int(_number(env, "RECOVEA_PORT", 8080)),
            data_dir=data_dir,
            database_url=_optional_pg_url(env, "RECOVEA_DATABASE_URL"),
            app_database_url=_optional_pg_url(env, "RECOVEA_APP_DATABASE_URL"),
            master_key_file=Path(env["RECOVEA_MASTER_KEY_FILE"])
            if env.get("RECOVEA_MASTER_KEY_FILE")
            else data_dir / "master.key",
            kms_key_id=env.get("RECOVEA_KMS_KEY_ID", "").strip() or None,
            data_key_cache_ttl_s=_number(env, "RECOVEA_DATA_KEY_CACHE_TTL_S", 300, minimum=0),
            data_key_max_uses=int(_number(env, "RECOVEA_DATA_KEY_MAX_USES", 100_000, minimum=1)),
            workspace_data_key_ttl_s=_number(
                env, "RECOVEA_WORKSPACE_DATA_KEY_TTL_S", 60, minimum=0
            ),
            key_cache_ttl_s=_number(env, "RECOVEA_KEY_CACHE_TTL_S", 60, minimum=0.001),
            key_negative_ttl_s=_number(env, "RECOVEA_KEY_NEGATIVE_TTL_S", 5, minimum=0),
            upstream_openai=_url(env, "RECOVEA_UPSTREAM_OPENAI", "https://api.openai.com"),
            upstream_anthropic=_url(env, "RECOVEA_UPSTREAM_ANTHROPIC", "https://api.anthropic.com"),
            upstream_openrouter=_url(
                env, "RECOVEA_UPSTREAM_OPENROUTER", "https://openrouter.ai/api"
            ),
            passthrough=_flag(env, "RECOVEA_PASSTHROUGH", "off"),
            max_body_bytes=int(
                _number(env, "RECOVEA_MAX_BODY_MB", 32, minimum=0.001) * 1024 * 1024
            ),
            max_upload_bytes=int(
                _number(env, "RECOVEA_MAX_UPLOAD_MB", 512, minimum=0.001) * 1024 * 1024
            ),
            connect_timeout_s=_number(env, "RECOVEA_CONNECT_TIMEOUT_S", 10, minimum=0.001),
            first_byte_timeout_s=_number(env, "RECOVEA_FIRST_BYTE_TIMEOUT_S", 600, minimum=0.001),
            idle_read_timeout_s=_number(env, "RECOVEA_IDLE_READ_TIMEOUT_S", 300, minimum=0.001),
            upstream_max_connections=int(
                _number(env, "RECOVEA_UPSTREAM_MAX_CONNECTIONS", 1000, minimum=1)
            ),
            upstream_pool_wait_s=_number(env, "RECOVEA_UPSTREAM_POOL_WAIT_S", 5, minimum=0),
            shutdown_grace_s=_number(env, "RECOVEA_SHUTDOWN_GRACE_S", 30),
            max_header_count=int(_number(env, "RECOVEA_MAX_HEADER_COUNT", 100, minimum=8)),
            max_header_bytes=int(_number(env, "RECOVEA_MAX_HEADER_KB", 32, minimum=1) * 1024),
            header_timeout_s=_number(env, "RECOVEA_HEADER_TIMEOUT_S", 10, minimum=0.001),
            body_idle_timeout_s=_number(env, "RECOVEA_BODY_IDLE_TIMEOUT_S", 30, minimum=0.001),
            max_connections=int(_number(env, "RECOVEA_MAX_CONNECTIONS", 10_000, minimum=1)),
            max_in_flight=int(_number(env, "RECOVEA_MAX_IN_FLIGHT", 4096, minimum=1)),
            auth_timeout_s=_number(env, "RECOVEA_AUTH_TIMEOUT_S", 2, minimum=0.001),
            key_cache_max=int(_number(env, "RECOVEA_KEY_CACHE_MAX", 100_000, minimum=1)),
            key_negative_cache_max=int(
                _number(env, "RECOVEA_KEY_NEGATIVE_CACHE_MAX", 10_000, minimum=1)
            ),
            log_format=log_format,
            log_level=env.get("RECOVEA_LOG_LEVEL", "info").strip().lower(),
            meter_queue_max=int(_number(env, "RECOVEA_METER_QUEUE_MAX", 100_000, minimum=1)),
            meter_batch_max=int(_number(env, "RECOVEA_METER_BATCH_MAX", 5000, minimum=1)),
            meter_flush_interval_s=_number(
                env, "RECOVEA_METER_FLUSH_INTERVAL_S", 1.0, minimum=0.001
            ),
            meter_spool_max_mb=_number(env, "RECOVEA_METER_SPOOL_MAX_MB", 256, minimum=0),
            meter_dead_letter_max_mb=_number(
                env, "RECOVEA_METER_DEAD_LETTER_MAX_MB", 64, minimum=0
            ),
            receipt_signing=_choice(
                env, "RECOVEA_RECEIPT_SIGNING", "each", ("each", "checkpoint")
            ),
            receipt_checkpoint_every=_whole(env, "RECOVEA_RECEIPT_CHECKPOINT_EVERY", 1000),
            receipt_checkpoint_ms=_whole(env, "RECOVEA_RECEIPT_CHECKPOINT_MS", 1000),
            maintenance_interval_s=_number(
                env, "RECOVEA_MAINTENANCE_INTERVAL_S", 300, minimum=0.01
            ),
            maintenance_timeout_s=_number(env, "RECOVEA_MAINTENANCE_TIMEOUT_S", 120, minimum=0.001),
            rollup_max_tags=int(_number(env, "RECOVEA_ROLLUP_MAX_TAGS", 1000, minimum=1)),
            redis_url=_optional_redis_url(env, "RECOVEA_REDIS_URL"),
            cache_max_mb=_number(env, "RECOVEA_CACHE_MAX_MB", 256, minimum=0),
            cache_entry_max_kb=_number(env, "RECOVEA_CACHE_ENTRY_MAX_KB", 4096, minimum=1),
            cache_budget_ms=_number(env, "RECOVEA_CACHE_BUDGET_MS", 50, minimum=1),
            flight_buffer_max_kb=_number(env, "RECOVEA_FLIGHT_BUFFER_MAX_KB", 8192, minimum=1),
            flight_followers_max=int(_number(env, "RECOVEA_FLIGHT_FOLLOWERS_MAX", 100, minimum=0)),
            flight_first_byte_wait_s=_number(
                env, "RECOVEA_FLIGHT_FIRST_BYTE_WAIT_S", 30, minimum=0.001
            ),
            route_max_attempts=int(_number(env, "RECOVEA_ROUTE_MAX_ATTEMPTS", 3, minimum=1)),
            route_retry_after_max_s=_number(env, "RECOVEA_ROUTE_RETRY_AFTER_MAX_S", 2, minimum=0),
            route_peek_max_kb=_number(env, "RECOVEA_ROUTE_PEEK_MAX_KB", 64, minimum=1),
            shadow_queue_max=int(_number(env, "RECOVEA_SHADOW_QUEUE_MAX", 64, minimum=1)),
            shadow_workers=int(_number(env, "RECOVEA_SHADOW_CONCURRENCY", 2, minimum=1)),
            shadow_capture_max_kb=_number(env, "RECOVEA_SHADOW_CAPTURE_MAX_KB", 512, minimum=1),
            shadow_timeout_s=_number(env, "RECOVEA_SHADOW_TIMEOUT_S", 120, minimum=0.001),
            shadow_daily_usd=_number(env, "RECOVEA_SHADOW_DAILY_USD", 5, minimum=0),
            shadow_margin=_rate(env, "RECOVEA_SHADOW_MARGIN", 0.05),
            shadow_min_sample=int(_number(env, "RECOVEA_SHADOW_MIN_SAMPLE", 30, minimum=1)),
            shadow_chrf_min=_rate(env, "RECOVEA_SHADOW_CHRF_MIN", 0.5),
            shadow_length_ratio_max=_number(env, "RECOVEA_SHADOW_LENGTH_RATIO_MAX", 2, minimum=1),
            ws_max_frame_bytes=int(
                _number(env, "RECOVEA_WS_MAX_FRAME_KB", 16384, minimum=1) * 1024
            ),
            ws_heartbeat_s=_number(env, "RECOVEA_WS_HEARTBEAT_S", 20, minimum=0),
            limit_window_s=_number(env, "RECOVEA_LIMIT_WINDOW_S", 60, minimum=0.1),
            limit_lease_s=_number(env, "RECOVEA_LIMIT_LEASE_S", 1, minimum=0.01),
            limit_lease_share=min(
                1.0, _number(env, "RECOVEA_LIMIT_LEASE_SHARE", 0.05, minimum=0.0001)
            ),
            limit_redis_timeout_ms=_number(env, "RECOVEA_LIMIT_REDIS_TIMEOUT_MS", 100, minimum=1),
            limit_default_max_tokens=int(
                _number(env, "RECOVEA_LIMIT_DEFAULT_MAX_TOKENS", 1024, minimum=0)
            ),
            limits_refresh_s=_number(env, "RECOVEA_LIMITS_REFRESH_S", 60, minimum=0.1),
            security_contact=env.get("RECOVEA_SECURITY_CONTACT", "mailto:security@example.invalid"),
            reconcile_interval_s=_number(env, "RECOVEA_RECONCILE_INTERVAL_S", 3600, minimum=0),
            reconcile_days=int(_number(env, "RECOVEA_RECONCILE_DAYS", 7, minimum=1)),
            reconcile_settle_hours=_number(env, "RECOVEA_RECONCILE_SETTLE_HOURS", 48, minimum=0),
            reconcile_timeout_s=_number(env, "RECOVEA_RECONCILE_TIMEOUT_S", 30, minimum=0.001),
            reconcile_attempts=int(_number(env, "RECOVEA_RECONCILE_ATTEMPTS", 3, minimum=1)),
            reconcile_retry_base_s=_number(env, "RECOVEA_RECONCILE_RETRY_BASE_S", 2, minimum=0),
            reconcile_retry_after_max_s=_number(
                env, "RECOVEA_RECONCILE_RETRY_AFTER_MAX_S", 60, minimum=0
            ),
            reconcile_tolerance_pct=min(
                100.0, _number(env, "RECOVEA_RECONCILE_TOLERANCE_PCT", 1, minimum=0)
            ),
            cap_lease_fraction=min(
                _number(env, "RECOVEA_CAP_LEASE_FRACTION", 0.1, minimum=0.000001), 1.0
            ),
            cap_lease_ttl_s=_number(env, "RECOVEA_CAP_LEASE_TTL_S", 30, minimum=0.1),
            cap_staleness_s=_number(env, "RECOVEA_CAP_STALENESS_S", 10, minimum=0.01),
            cap_sync_interval_s=_number(env, "RECOVEA_CAP_SYNC_INTERVAL_S", 2, minimum=0.01),
            cap_check_timeout_s=_number(env, "RECOVEA_CAP_CHECK_TIMEOUT_MS", 250, minimum=1)
            / 1000,
            cap_default_output_tokens=int(
                _number(env, "RECOVEA_CAP_DEFAULT_OUTPUT_TOKENS", 4096, minimum=0)
            ),
            cap_config_refresh_s=_number(env, "RECOVEA_CAP_CONFIG_REFRESH_S", 60, minimum=0.1),
            otel_endpoint=_traces_url(env, "RECOVEA_OTEL_ENDPOINT"),
            otel_service_name=env.get("RECOVEA_OTEL_SERVICE_NAME", "").strip()[:128] or "recovea",
            otel_queue_max=int(_number(env, "RECOVEA_OTEL_QUEUE_MAX", 4096, minimum=1)),
            otel_batch_max=int(_number(env, "RECOVEA_OTEL_BATCH_MAX", 512, minimum=1)),
            otel_flush_interval_s=_number(env, "RECOVEA_OTEL_FLUSH_INTERVAL_S", 1, minimum=0.01),
            otel_timeout_s=_number(env, "RECOVEA_OTEL_TIMEOUT_S", 5, minimum=0.01),
        )

    def upstream_for(self, provider: str) -> str:
        """The configured base URL of a provider."""
        return {
            "openai": self.upstream_openai,
            "anthropic": self.upstream_anthropic,
            "openrouter": self.upstream_openrouter,
        }[provider]


def _stdout_is_tty() -> bool:
    try:
        return os.isatty(1)
    except OSError:
        return False
