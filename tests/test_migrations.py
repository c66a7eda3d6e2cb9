"""`migrate` skips Alembic when the database is at head, and its head check follows Alembic."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from tollway.store import db
from tollway.store.db import (
    alembic_config,
    create_engine,
    migrate,
    schema_revisions,
    script_heads,
)


def test_script_heads_agree_with_alembic() -> None:
    """The head read without Alembic is Alembic's own head: a new migration cannot go unseen."""
    alembic_heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert script_heads() == frozenset(alembic_heads)
    assert len(alembic_heads) == 1


def _revision(dir: Path, name: str, body: str) -> None:
    (dir / f"{name}.py").write_text(f'"""{name}"""\nimport sqlalchemy as sa\n{body}\n')


def test_script_heads_follow_new_files_branches_and_merges(tmp_path: Path) -> None:
    _revision(tmp_path, "a", 'revision = "a"\ndown_revision = None')
    assert script_heads(tmp_path) == {"a"}
    _revision(tmp_path, "b", 'revision: str = "b"\ndown_revision: str | None = "a"')
    assert script_heads(tmp_path) == {"b"}
    _revision(tmp_path, "c", 'revision = "c"\ndown_revision = "a"')  # a branch: two heads
    assert script_heads(tmp_path) == {"b", "c"}
    _revision(tmp_path, "d", 'revision = "d"\ndown_revision = ("b", "c")')  # merged again
    (tmp_path / "__init__.py").write_text("")
    assert script_heads(tmp_path) == {"d"}


async def test_database_at_head_skips_alembic(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(db_url)
    try:
        await migrate(engine)
        assert await schema_revisions(engine) == script_heads()

        def must_not_run(connection: Connection, url: str) -> None:
            raise AssertionError("Alembic ran on a database at head")

        monkeypatch.setattr(db, "_upgrade", must_not_run)
        await migrate(engine)
    finally:
        await engine.dispose()


async def test_new_database_and_database_behind_head_are_migrated(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert await schema_revisions(engine) is None  # no alembic_version table yet

        def to_0001(connection: Connection) -> None:
            cfg = alembic_config(db_url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0001")

        async with engine.begin() as conn:
            await conn.run_sync(to_0001)
        assert await schema_revisions(engine) == {"0001"}
        assert {"0001"} != script_heads()

        await migrate(engine)
        assert await schema_revisions(engine) == script_heads()
        async with engine.connect() as conn:
            names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert "usage_rollups_daily" in names  # 0002's table
    finally:
        await engine.dispose()
