"""Follows the key changes log (`store/key_changes.py`) into this process's key cache:
exactly the changed keys are forgotten, so a change costs one database read per changed key
per instance, not a reload of every cached key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.store import key_changes


class KeyChangeFollower:
    def __init__(self, engine: AsyncEngine, forget: Callable[[str], None]) -> None:
        self._engine = engine
        self._forget = forget
        self._last = 0
        self._lock = asyncio.Lock()  # the poller and admin handlers may catch up together
        self.forgotten = 0  # keys forgotten so far (tests, diagnostics)

    async def start(self) -> None:
        """Changes made before this process started are already in the database."""
        self._last = await key_changes.last_id(self._engine)

    async def catch_up(self) -> None:
        async with self._lock:
            while rows := await key_changes.read_after(self._engine, self._last):
                for change_id, key_hash in rows:
                    self._forget(key_hash)
                    self._last = change_id
                self.forgotten += len(rows)
                if len(rows) < key_changes.MAX_READ:
                    return
