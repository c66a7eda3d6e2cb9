"""SIGTERM under load against a real `tollway serve` process: streams shorter than the drain
time finish normally; longer ones get a final `server_shutting_down` error event, and every
request's usage row is written before the process exits, saying which was which."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from .fake_upstream import FakeUpstream
from .faults_support import MESSAGES, figure, sse_events, wait_until
from .fixtures_gateway import make_key, run_async, write_config
from .servers import GatewayProcess

DRAIN = 2  # seconds


def _rows(db_url: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from tollway.store.db import create_engine
    from tollway.store.tables import usage_records

    async def fetch() -> list[dict[str, Any]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                return [dict(r._mapping) for r in await conn.execute(select(usage_records))]
        finally:
            await engine.dispose()

    result: list[dict[str, Any]] = run_async(fetch())
    return result


def test_sigterm_drains_then_ends_long_streams_with_an_error_event(tmp_path: Path) -> None:
    slow = FakeUpstream("slow").start()
    fast = FakeUpstream("fast").start()
    hung = FakeUpstream("hung").start()
    hung.behaviour.delay = 30.0  # still waiting for it when the drain ends
    slow.behaviour.chunks, slow.behaviour.chunk_delay = 200, 0.1  # 20 s: past any drain
    fast.behaviour.chunks, fast.behaviour.chunk_delay = 5, 0.2  # 1 s: inside the drain
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}"
    config = write_config(
        tmp_path / "tollway.yaml",
        [
            {"name": "slow", "base_url": slow.base_url, "api_key": slow.api_key, "models": ["s"]},
            {"name": "fast", "base_url": fast.base_url, "api_key": fast.api_key, "models": ["f"]},
            {"name": "hung", "base_url": hung.base_url, "api_key": hung.api_key, "models": ["h"]},
        ],
    )
    from tollway.store.db import migrate_sync

    migrate_sync(db_url)
    key = make_key(db_url)
    gw = GatewayProcess(
        {
            "TOLLWAY_DATABASE_URL": db_url,
            "TOLLWAY_CONFIG": str(config),
            "TOLLWAY_SHUTDOWN_DRAIN_SECONDS": str(DRAIN),
        },
        tmp_path,
    ).start()
    results: dict[str, tuple[str, list[str]]] = {}
    started = threading.Semaphore(0)

    def stream(name: str, model: str) -> None:
        with httpx.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            json={"model": model, "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as resp:
            lines: list[str] = []
            for line in resp.iter_lines():
                if line:
                    if not lines:
                        started.release()
                    lines.append(line)
            results[name] = (resp.headers["x-request-id"], lines)

    waiting: list[httpx.Response] = []

    def wait_for_hung() -> None:
        waiting.append(
            httpx.post(
                gw.url + "/v1/chat/completions",
                json={"model": "h", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
        )
        started.release()

    threads = [threading.Thread(target=stream, args=(f"slow{i}", "s")) for i in range(6)]
    threads += [threading.Thread(target=stream, args=(f"fast{i}", "f")) for i in range(3)]
    try:
        for t in threads:
            t.start()
        for _ in threads:
            assert started.acquire(timeout=20)  # every stream is flowing
        waiter = threading.Thread(target=wait_for_hung)
        waiter.start()
        wait_until(lambda: len(hung.seen) == 1)
        threads.append(waiter)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        # uvicorn re-raises the signal once it has shut down cleanly: killed by SIGTERM.
        assert gw.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        gw.stop()
        slow.stop()
        fast.stop()
        hung.stop()

    assert len(results) == 9 and len(waiting) == 1
    refused = waiting[0]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["code"] == "server_shutting_down"
    slow_ids = {rid for name, (rid, _) in results.items() if name.startswith("slow")}
    for name, (_, lines) in results.items():
        last = sse_events(lines)[-1]
        if name.startswith("slow"):
            assert last["error"]["code"] == "server_shutting_down", name
        else:
            assert lines[-1] == "data: [DONE]", name
    wait_until(lambda: len(_rows(db_url)) >= 10)
    rows = _rows(db_url)
    hung_id = refused.headers["x-request-id"]
    right = sum(
        (r["status"], r["error_type"])
        == (
            (503, "server_shutting_down")
            if r["request_id"] == hung_id
            else (200, "server_shutting_down" if r["request_id"] in slow_ids else None)
        )
        for r in rows
    )
    assert figure("SIGTERM with streams longer than the drain", 10, rows, right) == 0
    assert len(rows) == 10 and right == 10
