"""The gateway through a real PgBouncer in transaction pooling (TOLLWAY_DB_PGBOUNCER): keys
authenticated, usage written by the writer child, migrations run, with concurrent clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tollway.store.db import create_engine, pgbouncer_url

from .fixtures_gateway import Stack, make_key


def test_create_engine_pool_settings_and_pgbouncer_mode() -> None:
    engine = create_engine("postgresql+asyncpg://u@127.0.0.1:1/x", pool_size=3, max_overflow=2)
    assert (engine.pool.size(), engine.pool._max_overflow) == (3, 2)  # type: ignore[attr-defined]
    plain = create_engine("postgresql+asyncpg://u@127.0.0.1:1/x")
    assert (plain.pool.size(), plain.pool._max_overflow) == (5, 5)  # type: ignore[attr-defined]
    for bouncer in (
        create_engine("postgresql+asyncpg://u@127.0.0.1:1/x", pgbouncer=True),
        create_engine(pgbouncer_url("postgresql+asyncpg://u@127.0.0.1:1/x")),
    ):
        assert bouncer.url.query["prepared_statement_cache_size"] == "0"


@pytest.mark.postgres
def test_gateway_through_pgbouncer_transaction_pooling(
    pg_url_sync: str,
    pgbouncer_port: int,
    tmp_path: Path,
) -> None:
    direct = pg_url_sync.replace("127.0.0.1:5432", f"127.0.0.1:{pgbouncer_port}")
    url = pgbouncer_url(direct)  # migrations and test helpers in PgBouncer mode too
    stack = Stack(tmp_path, database_url=url, db_pgbouncer=True, db_pool_size=2)
    try:
        secrets = [make_key(url) for _ in range(8)]

        async def clients() -> list[str]:
            async def one(i: int) -> str:
                client = stack.aclient(secrets[i % len(secrets)])
                reply = await client.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": f"hi {i}"}]
                )
                return reply.choices[0].message.content or ""

            return await asyncio.gather(*(one(i) for i in range(48)))

        answers = asyncio.run(clients())
        assert len(answers) == 48 and all(answers)
        rows = stack.usage_rows(48)
        assert len(rows) == 48 and all(r["status"] == 200 for r in rows)
        assert len({r["key_id"] for r in rows}) == 8
    finally:
        stack.stop()


def test_engine_options_follow_settings_and_the_usage_writer_holds_one_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from tollway.core.settings import Settings
    from tollway.store import usage_worker
    from tollway.store.db import engine_options

    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert engine_options(defaults) == {"pool_size": 5, "max_overflow": 5, "pgbouncer": False}
    tuned = Settings(_env_file=None, db_pool_size=2, db_max_overflow=0, db_pgbouncer=True)  # type: ignore[call-arg]
    assert engine_options(tuned) == {"pool_size": 2, "max_overflow": 0, "pgbouncer": True}

    made: list[dict[str, object]] = []
    real = usage_worker.create_engine

    def spy(url: str, **kw: object) -> object:
        made.append(kw)
        return real(url, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(usage_worker, "create_engine", spy)
    usage_worker.serve("postgresql+asyncpg://u@127.0.0.1:1/x", io.BytesIO(b""), io.BytesIO())
    assert made == [{"pool_size": 1, "max_overflow": 0}]
