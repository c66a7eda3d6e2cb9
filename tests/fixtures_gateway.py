"""Fixtures that run the real thing: fake upstreams and Tollway on 127.0.0.1 sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tollway.core.settings import Settings
from tollway.services import keys as key_service
from tollway.store.db import create_engine, migrate_sync

from .fake_upstream import FakeUpstream
from .servers import GatewayThread


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion from sync or async test code alike."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def make_key(db_url: str, **fields: Any) -> str:
    """Create a client key through the service layer; returns the secret."""

    async def create() -> str:
        engine = create_engine(db_url)
        try:
            created = await key_service.create_key(engine, {"name": "test", **fields})
            return created.key
        finally:
            await engine.dispose()

    result: str = run_async(create())
    return result


def write_config(path: Path, upstreams: list[dict[str, Any]], **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({"upstreams": upstreams, **extra}))
    return path


class Stack:
    """Two fake upstreams, one Tollway, a database; rebuilt per test module."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.tmp = tmp
        self.a = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
        self.b = FakeUpstream("b", "sk-upstream-SECRET-bbbb").start()
        self.db_url = settings.pop("database_url", f"sqlite+aiosqlite:///{tmp / 'tollway.db'}")
        self.config = write_config(
            tmp / "tollway.yaml",
            settings.pop(
                "upstreams",
                [
                    {
                        "name": "a",
                        "base_url": self.a.base_url,
                        "api_key": self.a.api_key,
                        "models": ["gpt-test", "shared-model"],
                        "aliases": {"alias-model": "gpt-test"},
                        "serves_modelless": True,
                    },
                    {
                        "name": "b",
                        "base_url": self.b.base_url,
                        "api_key": self.b.api_key,
                        "models": ["shared-model", "other-model"],
                    },
                ],
            ),
            **settings.pop("config_extra", {}),  # more YAML sections, e.g. prices
        )
        migrate_sync(self.db_url)
        self.settings = Settings(
            database_url=self.db_url,
            config=self.config,
            usage_flush_interval=0.05,
            revision_poll_interval=0.2,
            upstream_read_timeout=settings.pop("upstream_read_timeout", 5.0),
            upstream_first_byte_timeout=settings.pop("upstream_first_byte_timeout", 5.0),
            **settings,
        )
        self.gateway = GatewayThread(self.settings).start()
        self.key = make_key(self.db_url)

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, key: str | None = None, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=key or self.key, base_url=self.url + "/v1", max_retries=0, **kw
        )

    def aclient(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=key or self.key, base_url=self.url + "/v1", max_retries=0)

    def reset(self) -> None:
        self.a.reset()
        self.b.reset()
        rt = self.gateway.app.runtime
        assert rt is not None
        rt.pool.reset_health()

    def usage_rows(self, expected: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The usage table once it holds `expected` rows (the writer is asynchronous)."""
        import time

        from sqlalchemy import select

        from tollway.store.tables import usage_records

        async def fetch() -> list[dict[str, Any]]:
            engine = create_engine(self.db_url)
            try:
                async with engine.connect() as conn:
                    rows = await conn.execute(select(usage_records).order_by(usage_records.c.id))
                    return [dict(r._mapping) for r in rows]
            finally:
                await engine.dispose()

        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = run_async(fetch())
        while len(rows) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = run_async(fetch())
        return rows

    def row(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The usage row of one request, once the background writer has stored it."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            for r in self.usage_rows(0):
                if r["request_id"] == request_id:
                    return r
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage row for request {request_id}")
            time.sleep(0.05)

    def last_row(self, upstream: FakeUpstream | None = None) -> dict[str, Any]:
        """The usage row of the last request the upstream received."""
        seen = (upstream or self.a).seen[-1]
        return self.row(seen.headers["X-Request-Id"])

    def stop(self) -> None:
        self.gateway.stop()
        self.a.stop()
        self.b.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.stop()


@pytest.fixture
def pg_url_sync() -> Iterator[str]:
    """A throwaway PostgreSQL database for sync tests (see fixtures_db for the rules)."""
    import secrets

    from .fixtures_db import PG_HOST, PG_PORT, PG_USER, _admin_connection

    name = f"tollway_t_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await _admin_connection()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_async(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        run_async(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def unused_port() -> int:
    from .servers import free_port

    return free_port()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.reset()
    return stack
