"""All configuration in one object, read from TOLLWAY_* variables and a .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOLLWAY_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    database_url: str = "sqlite+aiosqlite:///./tollway.db"
    config: Path | None = None
    admin_secret: SecretStr | None = None
    # Encrypts upstream secrets stored in the database; derived from the admin secret if unset.
    secret_key: SecretStr | None = None
    redis_url: str | None = None
    # Namespace of Tollway's Redis keys: instances sharing limits must use the same one.
    redis_prefix: str = "tollway"
    redis_timeout: float = 0.5  # seconds; an unreachable Redis refuses limited keys (503)
    # With Redis, one instance runs balance probes and health checks; another takes over
    # within this many seconds when it stops.
    pool_lease_ttl: float = Field(default=10.0, gt=0)
    log_level: str = "info"

    # Database connections per process (PostgreSQL): the usage writer child adds one more.
    # Sizing: instances x workers x (pool + overflow + 1) + CLI/admin jobs < max_connections.
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    # Behind PgBouncer in transaction pooling: no server-side prepared statement cache.
    db_pgbouncer: bool = False
    # Readiness: how long /readyz's database check may take, and how long its answer is reused.
    ready_timeout: float = Field(default=1.0, gt=0)
    ready_cache: float = Field(default=1.0, ge=0)
    # On SIGTERM, /readyz answers 503 "draining" this long before the listener closes, so a
    # load balancer stops sending new requests first (5 s is a good value behind one).
    shutdown_ready_delay: float = Field(default=0.0, ge=0)

    # Request handling
    max_body_bytes: int = 32 * 1024 * 1024
    upstream_connect_timeout: float = 10.0
    # From sending the request to the answer's first byte; past it the next upstream is tried.
    # A non-streamed answer's headers come when it is complete: long ones need more.
    upstream_first_byte_timeout: float = Field(default=120.0, gt=0)
    # The idle time between two reads once the answer has begun (not a whole-answer limit).
    upstream_read_timeout: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    # On SIGTERM, how long open requests may finish before streams get a final error event.
    shutdown_drain_seconds: int = Field(default=30, ge=0)

    # Background work
    # Who writes usage rows: a child process (keeps the database off the event loop and its
    # GIL), or "inline" on the gateway's own event loop.
    usage_writer: Literal["process", "inline"] = "process"
    usage_batch_size: int = 500
    usage_flush_interval: float = 0.25
    key_cache_ttl: float = 60.0
    negative_cache_ttl: float = 5.0
    revision_poll_interval: float = 1.0

    # Web UI: how long an admin stays logged in (seconds).
    ui_session_ttl: float = Field(default=12 * 3600, gt=0)

    def config_path(self) -> Path | None:
        """TOLLWAY_CONFIG, or ./tollway.yaml when it exists: one file to edit, no flag needed."""
        if self.config is not None:
            return self.config
        default = Path("tollway.yaml")
        return default if default.is_file() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
