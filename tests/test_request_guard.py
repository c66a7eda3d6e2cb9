"""The outermost guard with the database really unreachable: real PostgreSQL behind a real
TCP proxy taken down for the test (the shared server keeps running)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .faults_support import MESSAGES, figure
from .fixtures_gateway import Stack, make_key
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


def test_uncached_key_while_database_is_down_is_a_503_with_retry_after(
    pg_url_sync: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432).start()
    url = pg_url_sync.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    stack = Stack(tmp_path, database_url=url)
    try:
        uncached = make_key(url)  # never used yet: authenticating it needs the database
        proxy.down()
        answers = [
            httpx.post(
                stack.url + "/v1/chat/completions",
                json={"model": "gpt-test", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {uncached}"},
                timeout=30,
            )
            for _ in range(3)
        ]
        right = 0
        for resp in answers:
            error = resp.json()["error"]  # OpenAI-shaped JSON, never a plain-text 500
            assert set(error) == {"message", "type", "param", "code"}
            rid = resp.headers["x-request-id"]
            if (
                resp.status_code == 503
                and error["code"] == "database_unavailable"
                and resp.headers["retry-after"] == "2"
                and rid in error["message"]
            ):
                right += 1
        # No row: without the database the key, and so whose request it was, is unknown.
        figure("database down while authenticating", 0, [], right)
        assert right == 3
        logged = [r for r in caplog.records if "database_unavailable" in r.getMessage()]
        assert len(logged) == 3 and all(r.exc_info for r in logged)
        assert uncached not in caplog.text
        proxy.up()
        ok = httpx.post(
            stack.url + "/v1/chat/completions",
            json={"model": "gpt-test", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {uncached}"},
            timeout=30,
        )
        assert ok.status_code == 200  # back as soon as the database is
    finally:
        proxy.up()
        stack.stop()
        proxy.stop()
