"""Re-encrypt every upstream key stored in the database with a new server secret.

All or nothing: one transaction; a key that no known secret decrypts stops the rotation before
anything is written (its upstream is named). Rows from older versions, encrypted with a key
derived from TOLLWAY_ADMIN_SECRET, are moved to the server secret the same way.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.errors import Invalid
from tollway.store.tables import upstreams as table
from tollway.upstreams.crypto import SecretBox, UndecryptableSecret


async def reencrypt_upstream_keys(engine: AsyncEngine, old: SecretBox, new: SecretBox) -> int:
    """Returns how many keys were re-encrypted."""
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                select(table.c.id, table.c.name, table.c.api_key_enc).where(
                    table.c.api_key_enc.is_not(None)
                )
            )
        ).all()
        tokens: dict[int, str] = {}
        lost: list[str] = []
        for row in rows:
            if not row.api_key_enc:
                continue
            try:
                tokens[row.id] = new.encrypt(old.decrypt(row.api_key_enc))
            except UndecryptableSecret:
                lost.append(row.name)
        if lost:
            raise Invalid(
                "no known secret decrypts the key of upstream(s) "
                + ", ".join(sorted(lost))
                + ": set TOLLWAY_SECRET_KEY to the secret they were stored with (or "
                "TOLLWAY_ADMIN_SECRET for keys stored by older versions), or remove them"
            )
        for upstream_id, token in tokens.items():
            await conn.execute(
                update(table).where(table.c.id == upstream_id).values(api_key_enc=token)
            )
    return len(tokens)
