"""Upstreams stored in the database (managed by services/upstreams.py), keys decrypted."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.store.tables import upstreams as table

from .crypto import SecretBox, UndecryptableSecret
from .target import Upstream

log = logging.getLogger("tollway.upstreams")


def upstream_from_row(row: Any, api_key: str) -> Upstream:
    models = row.models
    return Upstream(
        name=row.name,
        base_url=row.base_url,
        api_key=api_key,
        models=frozenset(models) if models is not None else None,
        aliases=dict(row.aliases or {}),
        weight=float(row.weight),
        account=row.account or None,
        serves_modelless=bool(row.serves_modelless),
        provider=row.provider or "openai",
        source="database",
        rpm=row.rpm,
        tpm=row.tpm,
        manual_balance_usd=row.manual_balance_usd,
        db_id=row.id,
    )


async def load_db_upstreams(engine: AsyncEngine, box: SecretBox | None) -> list[Upstream]:
    """Enabled rows. A row whose key cannot be decrypted is skipped and logged (by name)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(table).where(table.c.enabled).order_by(table.c.id))).all()
    result = []
    for row in rows:
        key = ""
        if row.api_key_enc:
            if box is None:
                log.error(
                    "upstream %s: no TOLLWAY_SECRET_KEY to decrypt its key; skipped", row.name
                )
                continue
            try:
                key = box.decrypt(row.api_key_enc)
            except UndecryptableSecret:
                log.error(
                    "upstream %s: its key was encrypted with another secret key; skipped", row.name
                )
                continue
        result.append(upstream_from_row(row, key))
    return result
