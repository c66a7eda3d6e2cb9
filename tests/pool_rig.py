"""A running Tollway over fake upstreams with a YAML config of the test's choosing, and a
clock the test controls (the pool's; the network stays real)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import yaml
from sqlalchemy import select

from tollway.app import Runtime
from tollway.core.settings import Settings
from tollway.store.db import create_engine, migrate_sync
from tollway.store.tables import usage_records

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, run_async
from .servers import GatewayThread

CHAT_PATH = "/v1/chat/completions"


class Clock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chats(fake: FakeUpstream) -> int:
    return sum(1 for s in fake.seen if s.path == CHAT_PATH)


class Rig:
    def __init__(self, tmp: Path, config: dict[str, Any], **settings: Any) -> None:
        self.tmp = tmp
        self.db_url = settings.pop("database_url", f"sqlite+aiosqlite:///{tmp / 'tollway.db'}")
        settings.setdefault("spool_dir", tmp / "spool")  # never a spool shared between tests
        self.config_path = tmp / "tollway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        migrate_sync(self.db_url)
        self.settings = Settings(
            database_url=self.db_url,
            config=self.config_path,
            usage_flush_interval=0.05,
            revision_poll_interval=0.2,
            upstream_read_timeout=5.0,
            **settings,
        )
        self.gateway = GatewayThread(self.settings).start()
        self.key = make_key(self.db_url)
        self.clock = Clock()
        self.rt.pool.clock = self.clock

    @property
    def rt(self) -> Runtime:
        rt = self.gateway.app.runtime
        assert rt is not None
        return rt

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(api_key=key or self.key, base_url=self.url + "/v1", max_retries=0)

    def chat(self, model: str, key: str | None = None) -> httpx.Response:
        return httpx.post(
            self.url + CHAT_PATH,
            headers={"Authorization": f"Bearer {key or self.key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )

    def call(self, coro: Any) -> Any:
        return self.gateway.call(coro, timeout=30)

    def usage_rows(self, expected: int = 0) -> list[dict[str, Any]]:
        """The usage table, once it has `expected` rows (the writer runs in the background)."""
        import time

        deadline = time.monotonic() + 10
        rows = self._rows()
        while len(rows) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = self._rows()
        return rows

    def _rows(self) -> list[dict[str, Any]]:
        async def fetch() -> list[dict[str, Any]]:
            engine = create_engine(self.db_url)
            try:
                async with engine.connect() as conn:
                    rows = await conn.execute(select(usage_records).order_by(usage_records.c.id))
                    return [dict(r._mapping) for r in rows]
            finally:
                await engine.dispose()

        result: list[dict[str, Any]] = run_async(fetch())
        return result

    def stop(self) -> None:
        self.gateway.stop()
