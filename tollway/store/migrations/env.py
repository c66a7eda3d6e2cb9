"""Alembic environment: runs on the connection handed in by tollway.store.db.migrate."""

from __future__ import annotations

from alembic import context

from tollway.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")


def run() -> None:
    if connection is None:
        raise RuntimeError("run migrations through `tollway init` (tollway.store.db.migrate)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run()
