"""The database schema (SQLAlchemy Core). Alembic migrations under migrations/ create it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("email", String(320)),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("models", JSON),  # allow-list of public model names; NULL = all
    # Limits (NULL = unlimited)
    Column("rpm", Integer),
    Column("rpd", Integer),
    Column("tpm", Integer),
    Column("tpd", Integer),
    Column("token_quota", BigInteger),
    Column("budget_usd", Float),
    Column("budget_period", String(16), nullable=False, default="none"),
    Column("max_parallel", Integer),
    # Exact response cache for this key's requests (gateway/cache.py); off unless asked.
    Column("response_cache", Boolean, nullable=False, server_default=false()),
    Column("metadata", JSON),
    # Never reuse a deleted key's id: its usage history must not pass to a new key.
    sqlite_autoincrement=True,
)

upstreams = Table(
    "upstreams",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("base_url", String(2000), nullable=False),
    Column("api_key_enc", Text),  # Fernet token; never the clear key
    Column("models", JSON),  # list of served models; NULL = all
    Column("aliases", JSON),  # public name -> upstream model name
    Column("weight", Float, nullable=False, default=1.0),
    Column("account", String(200)),
    Column("provider", String(32), nullable=False, default="openai"),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("serves_modelless", Boolean, nullable=False, default=False),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("manual_balance_usd", Float),
    Column("extra", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

model_prices = Table(
    "model_prices",
    metadata,
    Column("model", String(300), primary_key=True),
    Column("input_per_mtok", Float, nullable=False),
    Column("output_per_mtok", Float, nullable=False),
    Column("cached_input_per_mtok", Float),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("key_id", Integer, ForeignKey("api_keys.id", ondelete="SET NULL")),
    Column("method", String(10), nullable=False),
    Column("endpoint", String(300), nullable=False),
    Column("model", String(300)),
    Column("upstream", String(200)),
    Column("upstream_model", String(300)),
    Column("status", Integer, nullable=False),
    Column("stream", Boolean, nullable=False, default=False),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("total_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("cache_write_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("cost_usd", Float),
    Column("latency_ms", Float),
    Column("ttft_ms", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error_type", String(100)),
    Column("fallback_from", String(300)),
    # Request detail (migration 0005): ms from the request's start to the limits' admission
    # and to the served upstream's response head; what a failed request was told; its failed
    # attempts as JSON text ([[upstream, model, why], ...], bounded).
    Column("admitted_ms", Float),
    Column("first_byte_ms", Float),
    Column("error_message", String(500)),
    Column("failures", Text),
    Column("cache_hit", Boolean, nullable=False, server_default=false()),
    Index("ix_usage_records_ts", "ts"),
    Index("ix_usage_records_key_ts", "key_id", "ts"),
    # A key's record pages, newest first by id (keyset): its errors without reading its
    # whole history (migration 0010).
    Index("ix_usage_records_key_id", "key_id", "id"),
    # Failed requests' times (a few per cent of the rows): totals filtered by an error status
    # (migration 0012). Partial: queries spell `status >= 400` with the literal (ERRORS_ONLY).
    # It covers what those totals filter, then what they sum: read from the index alone.
    Index(
        "ix_usage_records_errors_ts",
        *("ts", "status", "key_id", "model", "upstream", "error_type"),
        *("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "latency_ms"),
        sqlite_where=text("status >= 400"),
        postgresql_where=text("status >= 400"),
    ),
    # One row per request: replays and retries insert with ON CONFLICT DO NOTHING.
    Index("uq_usage_records_request_id", "request_id", unique=True),
)

# Hourly rollups kept current by the usage writer, so reports never scan raw rows.
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("hour", DateTime(timezone=True), nullable=False),
    Column("key_id", Integer, nullable=False),  # 0 for requests without a key
    Column("model", String(300), nullable=False),  # "" when none
    Column("upstream", String(200), nullable=False),  # "" when none
    Column("endpoint", String(300), nullable=False),
    Column("requests", BigInteger, nullable=False, default=0),
    Column("errors", BigInteger, nullable=False, default=0),
    # Of those, refused by Tollway itself (auth, limits, bad requests): status 4xx, no upstream
    # answer. The rest are upstream-side (5xx, upstream errors).
    Column("client_errors", BigInteger, nullable=False, server_default="0"),
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("total_tokens", BigInteger, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms_sum", Float, nullable=False, default=0.0),
    UniqueConstraint("hour", "key_id", "model", "upstream", "endpoint", name="uq_usage_rollups"),
    Index("ix_usage_rollups_key_hour", "key_id", "hour"),
    # Top keys of one model (migration 0010; a per-key-and-model shape would cost the usage
    # writer a few hundred more rows a batch).
    Index("ix_usage_rollups_model_hour", "model", "hour"),
)

# The same sums per UTC day, kept by the usage writer alongside the hourly ones: reports over
# weeks read ~24x fewer rows (hourly rows only for a range's partial first and last day).
usage_rollups_daily = Table(
    "usage_rollups_daily",
    metadata,
    Column("day", DateTime(timezone=True), nullable=False),
    Column("key_id", Integer, nullable=False),
    Column("model", String(300), nullable=False),
    Column("upstream", String(200), nullable=False),
    Column("endpoint", String(300), nullable=False),
    Column("requests", BigInteger, nullable=False, default=0),
    Column("errors", BigInteger, nullable=False, default=0),
    # Of those, refused by Tollway itself (auth, limits, bad requests): status 4xx, no upstream
    # answer. The rest are upstream-side (5xx, upstream errors).
    Column("client_errors", BigInteger, nullable=False, server_default="0"),
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("total_tokens", BigInteger, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms_sum", Float, nullable=False, default=0.0),
    UniqueConstraint(
        "day", "key_id", "model", "upstream", "endpoint", name="uq_usage_rollups_daily"
    ),
    Index("ix_usage_rollups_daily_key_day", "key_id", "day"),
    Index("ix_usage_rollups_daily_model_day", "model", "day"),
)


def _per_key_index(name: str, bucket: str) -> Index:
    """One key's rows of the per-key shape; partial, so queries must spell `dims = 1` as a
    literal (rollup_shapes.dims_is)."""
    return Index(
        f"ix_{name}_key_{bucket}",
        "key_id",
        bucket,
        sqlite_where=text("dims = 1"),
        postgresql_where=text("dims = 1"),
    )


def _cube(name: str, bucket: str) -> Table:
    """The rollups' counters summed over fewer dimensions (migration 0010): `dims` says which
    of key_id (1), model (2), upstream (4) and endpoint (8) a row keeps; the others hold 0 or
    "". A 30-day top-keys list reads one row per key and day instead of one per
    key/model/upstream/endpoint (store/rollup_shapes.py lists the shapes kept)."""
    return Table(
        name,
        metadata,
        Column(bucket, DateTime(timezone=True), nullable=False),
        Column("dims", SmallInteger, nullable=False),
        Column("key_id", Integer, nullable=False),
        Column("model", String(300), nullable=False),
        Column("upstream", String(200), nullable=False),
        Column("endpoint", String(300), nullable=False),
        *(
            Column(c, BigInteger, nullable=False, default=0)
            for c in (
                "requests",
                "errors",
                "client_errors",
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
            )
        ),
        Column("cost_usd", Float, nullable=False, default=0.0),
        Column("latency_ms_sum", Float, nullable=False, default=0.0),
        # Reads by shape and range (unfiltered top lists, series); the second index serves the
        # shapes read for one upstream (top keys of an upstream).
        UniqueConstraint(
            "dims", bucket, "key_id", "model", "upstream", "endpoint", name=f"uq_{name}"
        ),
        Index(f"ix_{name}_dims_model_upstream_{bucket}", "dims", "model", "upstream", bucket),
        _per_key_index(name, bucket),  # budgets, key standing, a key's series
    )


usage_cube = _cube("usage_cube", "hour")
usage_cube_daily = _cube("usage_cube_daily", "day")


def _latency(name: str, bucket: str) -> Table:
    """Latency histograms (migrations 0010, 0011): requests per latency bucket (8 per doubling
    of the milliseconds, store/rollup_shapes.py), in all (`dims` 0), per key (1), per model
    (2), per upstream (4) and per model and upstream (6), so the dashboard's p50/p95 never
    read raw rows unless a key is combined with another filter."""
    return Table(
        name,
        metadata,
        Column(bucket, DateTime(timezone=True), nullable=False),
        Column("dims", SmallInteger, nullable=False),
        Column("key_id", Integer, nullable=False, default=0),
        Column("model", String(300), nullable=False),
        Column("upstream", String(200), nullable=False),
        Column("ms_bucket", SmallInteger, nullable=False),
        Column("requests", BigInteger, nullable=False, default=0),
        UniqueConstraint(
            "dims", "key_id", "model", "upstream", bucket, "ms_bucket", name=f"uq_{name}"
        ),
        _per_key_index(name, bucket),  # a key's latency
    )


usage_latency = _latency("usage_latency", "hour")
usage_latency_daily = _latency("usage_latency_daily", "day")

# Bumped by every admin change; every instance polls it to drop stale caches within a second.
state_revisions = Table(
    "state_revisions",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("revision", BigInteger, nullable=False, default=0),
)

# One row per changed client key (by hash): instances read the rows after the last id they
# saw and forget just those keys. Ids only grow (autoincrement) and rows are pruned after a day.
key_changes = Table(
    "key_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key_hash", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,
)

# Alerts (migration 0006): where they go, and one row per alert ever raised. The unique
# (kind, subject, period) decides, across instances, who sends it: the one whose insert won.
alert_webhooks = Table(
    "alert_webhooks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("url_enc", Text, nullable=False),  # Fernet token: a Slack URL is itself a secret
    Column("url_hint", String(300), nullable=False),  # scheme://host/… for lists
    Column("secret_enc", Text, nullable=False),  # Fernet token of the HMAC signing secret
    Column("kinds", JSON),  # the alert kinds it receives; NULL = all
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # budget | key_expiry | upstream_down | ...
    Column("subject", String(300), nullable=False),  # key:<id> or upstream:<name>
    Column("period", String(100), nullable=False),  # the crossing: period+threshold, episode
    Column("text", String(1000), nullable=False),
    Column("fields", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),  # an upstream episode that ended
    Column("delivered", Integer, nullable=False, default=0),  # webhooks that took it
    Column("failed", Integer, nullable=False, default=0),  # webhooks that never did
    Column("last_error", String(300)),
    UniqueConstraint("kind", "subject", "period", name="uq_alert_events_crossing"),
    Index("ix_alert_events_subject", "kind", "subject", "id"),
    sqlite_autoincrement=True,
)

# Small key/value store for instance-wide state (e.g. the admin secret's hash).
kv = Table(
    "kv",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)
