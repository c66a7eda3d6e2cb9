"""Database fixtures: every store test runs on real SQLite and real PostgreSQL.

PostgreSQL tests get a fresh, uniquely named database (several people run tests on one
machine at once) that is dropped afterwards. Without a server they skip locally and fail in CI.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.store.db import create_engine, migrate

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
UNREACHABLE = f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}; CI runs these"


async def _admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=5
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{UNREACHABLE} ({exc!r})")
        pytest.skip(UNREACHABLE)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """Create a throwaway database and yield its SQLAlchemy URL; drop it on exit."""
    name = f"tollway_t_{secrets.token_hex(6)}"
    admin = await _admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin = await _admin_connection()
        try:
            # WITH (FORCE) ends connections a failed test may have leaked.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "tollway.db")
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    try:
        await migrate(eng)
        yield eng
    finally:
        await eng.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that ask for pg_url directly get the marker too, so `-m "not postgres"` skips them.
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
