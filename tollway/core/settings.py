"""All configuration in one object, read from TOLLWAY_* variables and a .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOLLWAY_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = Field(default="127.0.0.1", description="Address `tollway serve` listens on.")
    port: int = Field(default=8000, description="Port `tollway serve` listens on.")
    workers: int = Field(
        default=1,
        ge=1,
        description="Worker processes (one per core); more than one needs `TOLLWAY_REDIS_URL`.",
    )
    database_url: str = Field(
        default="sqlite+aiosqlite:///./tollway.db",
        description="SQLAlchemy URL: `sqlite+aiosqlite:///path` or "
        "`postgresql+asyncpg://user@host/db`.",
    )
    config: Path | None = Field(
        default=None,
        description="YAML file of upstreams, routing and prices; unset: `./tollway.yaml` "
        "when it exists.",
    )
    admin_secret: SecretStr | None = Field(
        default=None,
        description="Admin secret for the admin API, CLI `--url` mode and UI; unset: the one "
        "`tollway init` stored (as a hash).",
    )
    # Never stored in the database; when unset it is read from `secret_key_file`.
    secret_key: SecretStr | None = Field(
        default=None,
        description="The server secret: encrypts upstream keys stored in the database and "
        "signs UI sessions. Unset: read from `TOLLWAY_SECRET_KEY_FILE`.",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="Where `tollway init` writes the server secret (mode 0600) when "
        "`TOLLWAY_SECRET_KEY` is unset. Unset: `<database file>.secret` beside a SQLite "
        "database, else `./tollway.secret`.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for shared limits and pool state across processes and instances.",
    )
    redis_prefix: str = Field(
        default="tollway",
        description="Namespace of Tollway's Redis keys: instances sharing limits must use "
        "the same one.",
    )
    redis_timeout: float = Field(
        default=0.5,
        description="Seconds to wait for Redis; an unreachable Redis refuses limited keys (503).",
    )
    pool_lease_ttl: float = Field(
        default=10.0,
        gt=0,
        description="With Redis, one instance runs balance probes and health checks; another "
        "takes over within this many seconds when it stops.",
    )
    log_level: str = Field(default="info", description="Log level of `tollway serve`.")

    # Sizing: instances x workers x (pool + overflow + 1) + CLI/admin jobs < max_connections.
    db_pool_size: int = Field(
        default=5,
        ge=1,
        description="Database connections kept per process (the usage writer child adds one).",
    )
    db_max_overflow: int = Field(
        default=5, ge=0, description="Extra database connections a process may open at peaks."
    )
    db_pgbouncer: bool = Field(
        default=False,
        description="Behind PgBouncer in transaction pooling: no prepared statement cache, "
        "unique statement names.",
    )
    ready_timeout: float = Field(
        default=1.0, gt=0, description="Seconds each `/readyz` check (database, Redis) may take."
    )
    ready_cache: float = Field(
        default=1.0, ge=0, description="Seconds a `/readyz` answer is reused."
    )
    shutdown_ready_delay: float = Field(
        default=0.0,
        ge=0,
        description='On SIGTERM, seconds `/readyz` answers 503 "draining" before the '
        "listener closes, so a load balancer stops sending first (5 behind one).",
    )

    # Request handling
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, description="Largest request body accepted (413 beyond)."
    )
    upstream_connect_timeout: float = Field(
        default=10.0, description="Seconds to connect to an upstream."
    )
    # A non-streamed answer's headers come when it is complete: long ones need more.
    upstream_first_byte_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds from sending the request to the answer's first byte; past it "
        "the next upstream is tried. Raise it for long non-streamed generations.",
    )
    upstream_read_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds of silence allowed between two reads once the answer has begun "
        "(not a whole-answer limit).",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Upstreams tried per request before the first byte."
    )
    upstream_ca_bundle: Path | None = Field(
        default=None,
        description="PEM file of CAs trusted for HTTPS upstreams instead of the system store "
        "(an upstream's own `ca_bundle:` wins).",
    )
    upstream_trust_env: bool = Field(
        default=True,
        description="Honour HTTPS_PROXY / HTTP_PROXY / NO_PROXY for upstream connections.",
    )
    shutdown_drain_seconds: int = Field(
        default=30,
        ge=0,
        description="On SIGTERM, seconds open requests may finish before streams get a final "
        "error event.",
    )

    # The edge: what one client can hold of the process.
    max_buffered_body_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="Request-body bytes held in memory at once across the process; past it, "
        "503 + Retry-After.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds from a connection's opening (or its previous response) to a "
        "complete request head.",
    )
    keep_alive_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds an idle kept-alive connection stays open after a response.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Open client connections per process; unset: (open-file limit - 64) / 2.",
    )
    key_cache_size: int = Field(
        default=100_000,
        ge=1,
        description="Known client keys cached per process, ~0.55 KB each (least recently used "
        "out); at least the keys in use, or each request for the others reads the database.",
    )
    negative_cache_size: int = Field(
        default=10_000, ge=1, description="Unknown client keys cached (least recently used out)."
    )
    invalid_key_limit: int = Field(
        default=20,
        ge=0,
        description="Invalid keys one client address may send per window before it gets 429 "
        "(0 = off).",
    )
    invalid_key_window: float = Field(
        default=60.0, gt=0, description="Seconds of the invalid-key window."
    )

    # Background work
    usage_writer: Literal["process", "inline"] = Field(
        default="process",
        description="Who writes usage rows: a child process (keeps the database off the event "
        "loop and its GIL), or `inline` on the gateway's own event loop.",
    )
    usage_batch_size: int = Field(default=500, description="Usage events written per batch.")
    usage_flush_interval: float = Field(
        default=0.25, description="Seconds between usage batches at most."
    )
    spool_dir: Path | None = Field(
        default=None,
        description="The usage spool (events kept on disk until the database has them). "
        "Unset: `tollway-spool/` beside a SQLite database file, else `./tollway-spool`. "
        "Several instances may share one.",
    )
    spool_fsync: bool = Field(
        default=False,
        description="fsync each spool write: survives a power loss too, at a cost.",
    )
    usage_shutdown_timeout: float = Field(
        default=10.0,
        ge=0,
        description="Seconds shutdown (and start-up's replay) keep trying to write usage; the "
        "rest stays in the spool.",
    )
    key_cache_ttl: float = Field(
        default=60.0,
        description="Seconds before a cached key is read again (in the background; it keeps "
        "answering from the cache meanwhile).",
    )
    negative_cache_ttl: float = Field(
        default=5.0, description="Seconds an unknown key stays cached."
    )
    revision_poll_interval: float = Field(
        default=1.0,
        description="Seconds between checks for admin changes made by other instances.",
    )

    cache_ttl: float = Field(
        default=0.0,
        ge=0,
        description="Seconds an answer stays in the exact response cache (0: cache off). Keys "
        "(`response_cache`) or requests (`x-tollway-cache: on`) opt in; kept in memory, or in "
        "Redis (shared) when TOLLWAY_REDIS_URL is set.",
    )
    cache_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Bytes the in-memory response cache may hold (one answer: at most an eighth).",
    )

    # Alerts (README "Alerts").
    alert_interval: float = Field(
        default=30.0,
        ge=0,
        description="Seconds between each instance's alert checks (0: no background checks).",
    )
    alert_budget_thresholds: str = Field(
        default="50,80,100",
        description="Percentages of a key's budget that alert once per budget period.",
    )
    alert_expiry_days: float = Field(
        default=7.0, ge=0, description="How many days before a key expires its alert is sent."
    )
    alert_tries: int = Field(
        default=5, ge=1, le=20, description="Tries of one webhook delivery before giving up."
    )
    alert_retry_base: float = Field(
        default=2.0,
        ge=0,
        description="Seconds before a delivery's second try; doubled for each further try.",
    )
    alert_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a webhook has to answer one delivery."
    )

    ui_session_ttl: float = Field(
        default=12 * 3600, gt=0, description="Seconds an admin stays logged in to the web UI."
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Proxies whose X-Forwarded-For/-Proto are believed (comma-separated "
        "addresses or networks, `*` for any). Empty: none, the connecting address is the "
        "client.",
    )

    # Monitoring (README "Monitoring").
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for `GET /metrics` (Prometheus); unset: no metrics, and "
        "prometheus-client is never imported.",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="Where several workers keep their metric files (wiped at start); unset: a "
        "temporary directory.",
    )
    request_log: bool = Field(
        default=False,
        description="One line per request (request id, key id, model, upstream, status, "
        "tokens, latency, error type) on stderr, written by a thread; never a secret or a prompt.",
    )
    request_log_level: Literal["info", "warning", "error"] = Field(
        default="info",
        description="The least severe request-log line written (warning: failed requests only).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Format of the request log and of Tollway's own logs."
    )
    otel_enabled: bool = Field(
        default=False, description="OpenTelemetry spans per request, exported over OTLP/HTTP."
    )
    otel_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint; unset: the standard OTEL_EXPORTER_OTLP_* variables, "
        "else localhost:4318.",
    )
    otel_service_name: str = Field(
        default="tollway", description="`service.name` of the exported spans."
    )
    otel_sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Share of requests traced (0 to 1)."
    )

    def spool_path(self) -> Path | None:
        """Where the usage spool lives; None for an in-memory database (nothing outlives it)."""
        if self.spool_dir is not None:
            return self.spool_dir
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            path = self.database_url[len(prefix) :].split("?", 1)[0]
            if not path or ":memory:" in path:
                return None
            return Path(path).parent / "tollway-spool"
        return Path("tollway-spool")

    @field_validator("alert_budget_thresholds")
    @classmethod
    def _percentages(cls, v: str) -> str:
        try:
            values = [float(p) for p in v.split(",") if p.strip()]
        except ValueError:
            raise ValueError("comma-separated percentages, e.g. 50,80,100") from None
        if any(not 0 < p <= 1000 for p in values):
            raise ValueError("percentages between 0 (exclusive) and 1000")
        return v

    def budget_thresholds(self) -> list[float]:
        """TOLLWAY_ALERT_BUDGET_THRESHOLDS as sorted percentages ("50,80,100")."""
        return sorted({float(p) for p in self.alert_budget_thresholds.split(",") if p.strip()})

    def config_path(self) -> Path | None:
        """TOLLWAY_CONFIG, or ./tollway.yaml when it exists: one file to edit, no flag needed."""
        if self.config is not None:
            return self.config
        default = Path("tollway.yaml")
        return default if default.is_file() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
