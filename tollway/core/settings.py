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
    # The server secret: encrypts upstream keys stored in the database and signs UI sessions.
    # Never stored in the database; when unset it is read from `secret_key_file`.
    secret_key: SecretStr | None = None
    # Where `tollway init` writes the server secret (mode 0600) when TOLLWAY_SECRET_KEY is unset.
    # Default: beside a SQLite database (`<database>.secret`), else ./tollway.secret.
    secret_key_file: Path | None = None
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

    # The edge: what one client can hold of the process.
    # Request-body bytes held in memory at once across the process; past it, 503 + Retry-After.
    max_buffered_body_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    # Seconds from a connection's opening (or its previous response) to a complete request head.
    header_timeout: float = Field(default=10.0, gt=0)
    # Seconds an idle kept-alive connection stays open after a response.
    keep_alive_timeout: float = Field(default=5.0, gt=0)
    # Open client connections per process; unset = (open-file limit - 64) / 2.
    max_connections: int | None = Field(default=None, ge=1)
    # Cached keys (known ones, unknown ones), least recently used dropped first.
    key_cache_size: int = Field(default=100_000, ge=1)
    negative_cache_size: int = Field(default=10_000, ge=1)
    # Invalid keys one client address may send per window before it gets 429 (0 = off).
    invalid_key_limit: int = Field(default=20, ge=0)
    invalid_key_window: float = Field(default=60.0, gt=0)

    # Background work
    # Who writes usage rows: a child process (keeps the database off the event loop and its
    # GIL), or "inline" on the gateway's own event loop.
    usage_writer: Literal["process", "inline"] = "process"
    usage_batch_size: int = 500
    usage_flush_interval: float = 0.25
    # The usage spool (events kept on disk until the database has them). Unset: a directory
    # beside a SQLite database file, else ./tollway-spool. Several instances may share one.
    spool_dir: Path | None = None
    spool_fsync: bool = False  # fsync each write: survives a power loss too, at a cost
    # On shutdown, how long to keep trying to write usage; the rest stays in the spool.
    usage_shutdown_timeout: float = Field(default=10.0, ge=0)
    key_cache_ttl: float = 60.0
    negative_cache_ttl: float = 5.0
    revision_poll_interval: float = 1.0

    # The exact response cache (gateway/cache.py): how long an answer is kept; 0 = off. Keys
    # (`response_cache`) or requests (`x-tollway-cache: on`) opt in. In memory (an LRU of at
    # most cache_max_bytes), or in Redis, shared, when TOLLWAY_REDIS_URL is set.
    cache_ttl: float = Field(default=0.0, ge=0)
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)

    # Web UI: how long an admin stays logged in (seconds).
    ui_session_ttl: float = Field(default=12 * 3600, gt=0)
    # Proxies whose X-Forwarded-For/-Proto are believed (comma-separated addresses or
    # networks, "*" for any). Empty: none, the connecting address is the client.
    forwarded_allow_ips: str = ""

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

    def config_path(self) -> Path | None:
        """TOLLWAY_CONFIG, or ./tollway.yaml when it exists: one file to edit, no flag needed."""
        if self.config is not None:
            return self.config
        default = Path("tollway.yaml")
        return default if default.is_file() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
