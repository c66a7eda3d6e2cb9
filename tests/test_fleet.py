"""The whole fleet at once, as deployed: three `tollway serve` instances and a fourth with two
workers, started together on an empty PostgreSQL database (one of them through PgBouncer in
transaction pooling) and one Redis. Limits are exact across all five processes, and an admin
change made on one instance is obeyed by every process within a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, write_config
from .limits_support import REDIS_URL, drop_prefix, require_redis, unique_prefix
from .servers import GatewayProcess

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ADMIN_SECRET = "fleet-test-admin-secret-0123456789"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    p = unique_prefix()
    yield p
    drop_prefix(p)


def chat(url: str, key: str) -> int:
    answer = httpx.post(
        url + "/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    return answer.status_code


def test_fleet_of_five_processes_behaves_as_one_gateway(
    pg_url_sync: str, pgbouncer_port: int, prefix: str, tmp_path: Path
) -> None:
    upstream = FakeUpstream("a", "sk-upstream-SECRET-fleet").start()
    config = write_config(
        tmp_path / "tollway.yaml",
        [
            {
                "name": "a",
                "base_url": upstream.base_url,
                "api_key": upstream.api_key,
                "models": ["m"],
            }
        ],
    )
    env = {
        "TOLLWAY_DATABASE_URL": pg_url_sync,
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_REDIS_URL": REDIS_URL,
        "TOLLWAY_REDIS_PREFIX": prefix,
        "TOLLWAY_ADMIN_SECRET": ADMIN_SECRET,
        "TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "TOLLWAY_LOG_LEVEL": "warning",
    }
    bounced = pg_url_sync.replace(":5432/", f":{pgbouncer_port}/")
    fleet = [
        GatewayProcess(env, tmp_path),
        GatewayProcess(env, tmp_path),
        GatewayProcess(
            {**env, "TOLLWAY_DATABASE_URL": bounced, "TOLLWAY_DB_PGBOUNCER": "true"}, tmp_path
        ),
        GatewayProcess({**env, "TOLLWAY_WORKERS": "2"}, tmp_path),
    ]
    try:
        with ThreadPoolExecutor(len(fleet)) as starter:  # all at once, on an empty database
            list(starter.map(GatewayProcess.start, fleet))
        urls = [g.url for g in fleet]

        # rpm 30 over five processes: exactly 30 of 120, whichever process each one reached.
        limited = make_key(pg_url_sync, rpm=30)
        with ThreadPoolExecutor(16) as clients:
            statuses = list(clients.map(lambda i: chat(urls[i % 4], limited), range(120)))
        print(f"\nFLEET rpm 30 over 5 processes: {statuses.count(200)} of 120 admitted")
        assert statuses.count(200) == 30 and statuses.count(429) == 90, statuses

        # An admin change on instance 1 reaches every process (both workers of the fourth
        # instance: several requests each, so both are asked) within a second.
        victim = make_key(pg_url_sync)
        for url in urls:
            assert all(chat(url, victim) == 200 for _ in range(4))
        keys = httpx.get(
            urls[0] + "/admin/api/keys", headers={"Authorization": f"Bearer {ADMIN_SECRET}"}
        ).json()
        victim_id = max(k["id"] for k in keys["items"])
        disabled_at = time.monotonic()
        answer = httpx.post(
            f"{urls[0]}/admin/api/keys/{victim_id}/disable",
            headers={"Authorization": f"Bearer {ADMIN_SECRET}"},
        )
        assert answer.status_code == 200, answer.text

        def refused_after(url: str) -> float:
            while time.monotonic() - disabled_at < 5:
                if all(chat(url, victim) == 403 for _ in range(4)):
                    return time.monotonic() - disabled_at
                time.sleep(0.01)
            return float("inf")

        with ThreadPoolExecutor(len(urls)) as watchers:
            seen = list(watchers.map(refused_after, urls))
        print("FLEET key disabled on instance 1, refused after:", [f"{s:.2f} s" for s in seen])
        # Instances read the change log every `revision_poll_interval` (1 s); the slack is
        # for a loaded 2-core CI machine.
        assert max(seen) < 1.5, seen
    finally:
        for gateway in fleet:
            gateway.stop()
        upstream.stop()
