"""Engine creation and schema migrations (Alembic, run programmatically)."""

from __future__ import annotations

import ast
import asyncio
import fcntl
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

    from tollway.core.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
# pg_advisory_xact_lock's key for migrations ("tollway!" as a big-endian int64).
MIGRATION_LOCK_ID = int.from_bytes(b"tollway!", "big")
# In a URL, `prepared_statement_cache_size=0` turns PgBouncer mode on (how the gateway tells
# its usage writer child, whose only input is the URL).
_STATEMENT_CACHE = "prepared_statement_cache_size"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def pgbouncer_url(url: str) -> str:
    """The URL with PgBouncer mode spelled in it."""
    parsed = make_url(url).update_query_dict({_STATEMENT_CACHE: "0"})
    return parsed.render_as_string(hide_password=False)


def _statement_name() -> str:
    return f"__tw_{uuid.uuid4().hex}__"


def create_engine(
    url: str, *, pool_size: int = 5, max_overflow: int = 5, pgbouncer: bool = False, **kwargs: Any
) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so readers never block the writer.

    PostgreSQL holds at most `pool_size` + `max_overflow` connections. `pgbouncer` (or
    `prepared_statement_cache_size=0` in the URL) is for PgBouncer's transaction pooling: the
    server connection changes between transactions, so nothing stays prepared (SQLAlchemy's
    and asyncpg's statement caches off) and each statement gets a unique name."""
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if pgbouncer or make_url(url).query.get(_STATEMENT_CACHE) == "0":
        url = pgbouncer_url(url)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("statement_cache_size", 0)  # asyncpg's own (raw executemany)
        connect_args.setdefault("prepared_statement_name_func", _statement_name)
    kwargs.setdefault("pool_size", pool_size)
    kwargs.setdefault("max_overflow", max_overflow)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def engine_options(settings: Settings) -> dict[str, Any]:
    """create_engine's pool arguments from the TOLLWAY_DB_* settings."""
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pgbouncer": settings.db_pgbouncer,
    }


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def script_heads(versions_dir: Path = VERSIONS_DIR) -> frozenset[str]:
    """The newest revision(s), read from the migration files themselves.

    Alembic takes ~0.2 s to import; this reads each file's `revision` and `down_revision`
    (the same assignments Alembic reads) with `ast`, so it follows every new migration.
    A test checks that it always agrees with Alembic's own heads."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions_dir.glob("*.py")):
        if path.name.startswith(("_", ".")):  # __init__.py, editor droppings: not revisions
            continue
        found = _module_constants(path, ("revision", "down_revision"))
        revisions.add(found["revision"])
        down = found.get("down_revision")
        parents.update([down] if isinstance(down, str) else down or ())
    return frozenset(revisions - parents)


def _module_constants(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            found[target.id] = ast.literal_eval(value)
    return found


async def schema_revisions(engine: AsyncEngine) -> frozenset[str] | None:
    """The revision(s) the database is at; None when it has no `alembic_version` table."""
    try:
        async with engine.connect() as conn:
            rows = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            return frozenset(str(r) for r in rows.scalars())
    except DBAPIError:  # no such table: a new database (a real fault shows up in migrating)
        return None


def _upgrade(connection: Connection, url: str) -> None:
    from alembic import command

    cfg = alembic_config(url)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent, safe to run from many processes).

    A database already at head costs one query: Alembic runs only when there is work. Then
    one process at a time migrates (PostgreSQL: a transaction-level advisory lock, which also
    holds through PgBouncer; SQLite: a file lock), and whoever waited re-checks the head under
    the lock, so N instances started at once on an empty or old database all come up."""
    heads = script_heads()
    if await schema_revisions(engine) == heads:
        return
    url = engine.url.render_as_string(hide_password=False)
    async with _migration_lock(engine, url) as conn:
        if await _revisions_in(conn) != heads:
            await conn.run_sync(_upgrade, url)


@asynccontextmanager
async def _migration_lock(engine: AsyncEngine, url: str) -> AsyncIterator[AsyncConnection]:
    """A transaction that holds the migration lock until it commits."""
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            yield conn
        return
    path = make_url(url).database if is_sqlite(url) else None
    if not path or path == ":memory:":  # no file to share: no other process can see it
        async with engine.begin() as conn:
            yield conn
        return
    fd = os.open(f"{path}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)  # released by close
        async with engine.begin() as conn:
            yield conn
    finally:
        os.close(fd)


async def _revisions_in(conn: AsyncConnection) -> frozenset[str] | None:
    """Like schema_revisions, inside the lock's transaction (a failed statement would end a
    PostgreSQL transaction, so the table's existence is asked first)."""
    if conn.dialect.name == "postgresql":
        found = await conn.exec_driver_sql("SELECT to_regclass('alembic_version') IS NOT NULL")
    else:
        found = await conn.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='alembic_version'"
        )
    if not found.scalar():
        return None
    rows = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
    return frozenset(str(r) for r in rows.scalars())


def migrate_sync(url: str, *, pgbouncer: bool = False) -> None:
    async def _run() -> None:
        engine = create_engine(url, pool_size=1, max_overflow=0, pgbouncer=pgbouncer)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(_run())
