"""`/metrics` with several processes: a `tollway serve` with two workers (multiprocess mode)
reports the same totals whichever worker answers the scrape; a second instance on the same
database and Redis reports only its own, so Prometheus sums the instances."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tollway.store.db import migrate_sync

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, write_config
from .limits_support import REDIS_URL, drop_prefix, require_redis, unique_prefix
from .metrics_support import TOKEN, scrape, value
from .servers import GatewayProcess

BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def _send(url: str, key: str, n: int) -> None:
    for _ in range(n):  # a new connection each time, so the kernel spreads them over workers
        answer = httpx.post(
            url + "/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {key}", "Connection": "close"},
        )
        assert answer.status_code == 200, answer.text


@pytest.mark.redis
def test_two_workers_and_two_instances(tmp_path: Path) -> None:
    require_redis()
    upstream = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}"
    config = write_config(
        tmp_path / "tollway.yaml",
        [{"name": "a", "base_url": upstream.base_url, "api_key": upstream.api_key,
          "models": ["gpt-test"]}],
    )  # fmt: skip
    migrate_sync(db_url)
    key = make_key(db_url)
    prefix = unique_prefix()
    metrics_dir = tmp_path / "metrics"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's file: wiped
    common = {
        "TOLLWAY_DATABASE_URL": db_url,
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_REDIS_URL": REDIS_URL,
        "TOLLWAY_REDIS_PREFIX": prefix,
        "TOLLWAY_LOG_LEVEL": "warning",
        "TOLLWAY_METRICS_TOKEN": TOKEN,
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = GatewayProcess(
        {**common, "TOLLWAY_WORKERS": "2", "TOLLWAY_METRICS_DIR": str(metrics_dir),
         "TOLLWAY_SPOOL_DIR": str(tmp_path / "a")},
        tmp_path,
    )  # fmt: skip
    two = GatewayProcess({**common, "TOLLWAY_SPOOL_DIR": str(tmp_path / "b")}, tmp_path)
    try:
        one.start()
        two.start()
        _send(one.url, key, 24)
        _send(two.url, key, 7)
        # every worker wrote its own files...
        pids = {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2, sorted(p.name for p in metrics_dir.iterdir())
        # ...and every scrape, whichever worker answers it, sums them
        seen = []
        for _ in range(6):
            text = httpx.get(
                one.url + "/metrics",
                headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"},
            ).text
            seen.append(value(text, "tollway_requests_total", model="gpt-test", upstream="a"))
            assert value(text, "tollway_tokens_total", kind="input") == 24 * 11
            assert value(text, "tollway_request_duration_seconds_count") == 24
            assert value(text, "tollway_upstream_up", upstream="a") == 1
        assert seen == [24.0] * 6
        other = scrape(two.url)
        assert value(other, "tollway_requests_total") == 7
        total = value(text, "tollway_requests_total") + value(other, "tollway_requests_total")
        assert total == upstream_requests(upstream) == 31
        print(f"\nfleet metrics: instance 1 (2 workers, pids {sorted(pids)}) 24, instance 2 7")
    finally:
        one.stop()
        two.stop()
        upstream.stop()
        drop_prefix(prefix)
    assert not list(metrics_dir.glob("gauge_live*")), "live gauges of stopped workers remain"


def upstream_requests(upstream: FakeUpstream) -> int:
    return sum(1 for seen in upstream.seen if seen.path.endswith("/chat/completions"))
