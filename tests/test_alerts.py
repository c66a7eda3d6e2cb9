"""Alerts to webhooks, against real Tollway instances and a real local webhook receiver:
budget thresholds once per crossing across two instances on one PostgreSQL, a failed first
delivery retried, signatures checked, key expiry, upstream out of credit once per episode,
and the webhooks' admin API and CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tollway.core.settings import Settings, get_settings
from tollway.store.db import migrate_sync

from .fake_upstream import FakeUpstream
from .fixtures_gateway import Stack, make_key, write_config
from .servers import GatewayThread
from .webhook_receiver import Receiver

ADMIN = "alerts-admin-secret-0123456789abcd"
HOOK_SECRET = "hook-signing-secret-0123456789"
PRICES = {"gpt-test": {"input": 1000.0, "output": 1000.0}}  # 14 tokens: $0.014 a request
FAST = {"alert_interval": 0.1, "alert_retry_base": 0.05, "alert_budget_thresholds": "50,80,100"}


def admin(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, f"{url}/admin/api{path}", headers=headers, timeout=10, **kw)


def add_hook(url: str, receiver: Receiver, name: str, kinds: list[str] | None) -> int:
    body = {"name": name, "url": receiver.url, "secret": HOOK_SECRET, "kinds": kinds}
    answer = admin(url, "POST", "/alerts/webhooks", json=body)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["info"]["id"])


def checks_done(gateways: list[GatewayThread], more: int = 3, timeout: float = 15.0) -> None:
    """Wait until every instance has run `more` further checks and sent what it raised."""
    monitors = [g.app.runtime.alerts for g in gateways]  # type: ignore[union-attr]
    goal = [m.runs + more for m in monitors]  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(m.runs >= n and not m.sending for m, n in zip(monitors, goal, strict=True)):  # type: ignore[union-attr]
            return
        time.sleep(0.02)
    raise AssertionError("the alert checks did not run")


def chat(url: str, key: str, model: str = "gpt-test") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )


@pytest.mark.postgres
def test_budget_alerts_once_per_crossing_across_two_instances(
    pg_url_sync: str, tmp_path: Path
) -> None:
    fake = FakeUpstream("a", "sk-upstream-SECRET-alerts").start()
    receiver = Receiver(HOOK_SECRET)
    upstream = {"name": "a", "base_url": fake.base_url, "api_key": fake.api_key}
    config = write_config(tmp_path / "tollway.yaml", [upstream], prices=PRICES)
    migrate_sync(pg_url_sync)
    gateways = [
        GatewayThread(
            Settings(
                database_url=pg_url_sync,
                config=config,
                admin_secret=ADMIN,
                secret_key="alerts-server-secret-0123456789abcdef",
                spool_dir=tmp_path / f"spool{i}",
                usage_flush_interval=0.05,
                **FAST,
            )
        ).start()
        for i in range(2)
    ]
    try:
        add_hook(gateways[0].url, receiver, "ops", ["budget"])
        key = make_key(pg_url_sync, name="capped", budget_usd=0.025, budget_period="monthly")
        assert chat(gateways[0].url, key).status_code == 200  # 56 %: past 50
        (first,) = receiver.wait_for(1)
        checks_done(gateways)
        assert len(receiver.taken()) == 1  # both instances saw it; one sent it
        assert first["alert"]["kind"] == "budget" and first["alert"]["threshold"] == 50
        assert first["alert"]["key_name"] == "capped"
        assert first["text"].startswith("[Tollway] Key “capped”")  # Slack's field
        assert chat(gateways[1].url, key).status_code == 200  # 112 %: past 80 and 100 at once
        receiver.wait_for(2)
        checks_done(gateways)
        got = receiver.taken()
        # One message for the jump (the highest threshold); 80 is recorded, never re-sent.
        assert [a["alert"]["threshold"] for a in got] == [50, 100]
        raised = admin(gateways[1].url, "GET", "/alerts").json()
        assert sorted(a["period"].rsplit(":", 1)[1] for a in raised) == ["100", "50", "80"]
        assert all(a["delivered"] in (0, 1) and a["failed"] == 0 for a in raised)
        assert sum(a["delivered"] for a in raised) == 2
    finally:
        for g in gateways:
            g.stop()
        fake.stop()
        receiver.stop()


@pytest.fixture(scope="module")
def astack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("alerts"), admin_secret=ADMIN, **FAST)
    yield s
    s.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(HOOK_SECRET)
    yield r
    r.stop()


def test_a_failed_first_delivery_is_retried(astack: Stack) -> None:
    receiver = Receiver(HOOK_SECRET, fail_first=1)
    hook = add_hook(astack.url, receiver, "retry", ["key_expiry"])
    try:
        soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        make_key(astack.db_url, name="short-lived", expires_at=soon)
        (alert,) = receiver.wait_for(1)
        checks_done([astack.gateway])
        assert len(receiver.posts) == 2  # refused once, taken on the retry
        (refused_headers, refused_body), (_, taken_body) = receiver.posts
        assert refused_body == taken_body and receiver.verified(refused_headers, refused_body)
        assert (
            alert["alert"]["kind"] == "key_expiry" and alert["alert"]["key_name"] == "short-lived"
        )
        row = next(
            a for a in admin(astack.url, "GET", "/alerts").json() if a["id"] == alert["alert"]["id"]
        )
        assert row["delivered"] == 1 and row["failed"] == 0
    finally:
        admin(astack.url, "DELETE", f"/alerts/webhooks/{hook}")
        receiver.stop()


def test_a_webhook_that_never_answers_is_given_up_and_recorded(astack: Stack) -> None:
    receiver = Receiver(HOOK_SECRET, fail_first=1000)
    hook = add_hook(astack.url, receiver, "down", ["key_expiry"])
    try:
        soon = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        make_key(astack.db_url, name="doomed", expires_at=soon)
        deadline = time.monotonic() + 15
        while len(receiver.posts) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        checks_done([astack.gateway])
        assert len(receiver.posts) == 5  # TOLLWAY_ALERT_TRIES, then no more
        row = next(a for a in admin(astack.url, "GET", "/alerts").json() if "doomed" in a["text"])
        assert row["delivered"] == 0 and row["failed"] == 1
        assert row["last_error"] == "down: HTTP 500 (try 5 of 5)"
        assert "T0KEN" not in json.dumps(row)  # the URL (and its token) is never shown
    finally:
        admin(astack.url, "DELETE", f"/alerts/webhooks/{hook}")
        receiver.stop()


def test_upstream_out_of_credit_alerts_once_per_episode(astack: Stack, receiver: Receiver) -> None:
    hook = add_hook(astack.url, receiver, "credit", ["upstream_credit"])
    other = Receiver(HOOK_SECRET)  # takes other kinds only: gets nothing of this
    other_hook = add_hook(astack.url, other, "not-credit", ["key_expiry", "upstream_down"])
    try:
        astack.reset()
        astack.b.behaviour.mode = "no_credit"
        for _ in range(3):  # out of rotation after the first; still one alert
            assert chat(astack.url, astack.key, "other-model").status_code == 503
        (alert,) = receiver.wait_for(1)
        checks_done([astack.gateway])
        assert len(receiver.taken()) == 1
        assert alert["alert"]["upstream"] == "b" and alert["alert"]["health"] == "out_of_credit"
        astack.reset()  # healthy again: the episode ends
        checks_done([astack.gateway])
        astack.b.behaviour.mode = "no_credit"
        assert chat(astack.url, astack.key, "other-model").status_code == 503
        got = receiver.wait_for(2)
        assert [a["alert"]["period"] for a in got] == ["1", "2"]
        checks_done([astack.gateway])
        assert other.posts == []
    finally:
        astack.reset()
        admin(astack.url, "DELETE", f"/alerts/webhooks/{hook}")
        admin(astack.url, "DELETE", f"/alerts/webhooks/{other_hook}")
        other.stop()


def test_webhooks_api_hides_urls_and_secrets(astack: Stack, receiver: Receiver) -> None:
    bad = admin(astack.url, "POST", "/alerts/webhooks", json={"name": "x", "url": "ftp://h"})
    assert bad.status_code == 422
    created = admin(
        astack.url, "POST", "/alerts/webhooks", json={"name": "gen", "url": receiver.url}
    )
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    hook = created.json()["info"]["id"]
    listing = admin(astack.url, "GET", "/alerts/webhooks").text
    assert secret not in listing and "T0KEN" not in listing and "http://127.0.0.1:" in listing
    stored = str(_webhook_rows(astack.db_url))
    assert "gen" in stored and secret not in stored and "T0KEN" not in stored  # encrypted
    dup = admin(astack.url, "POST", "/alerts/webhooks", json={"name": "gen", "url": receiver.url})
    assert dup.status_code == 422
    receiver.secret = secret
    assert admin(astack.url, "POST", f"/alerts/webhooks/{hook}/test").json() == {
        "ok": True,
        "error": None,
    }
    (test_alert,) = receiver.taken()  # signed with the generated secret
    assert test_alert["alert"]["kind"] == "test"
    off = admin(astack.url, "PATCH", f"/alerts/webhooks/{hook}", json={"enabled": False})
    assert off.json()["enabled"] is False
    assert admin(astack.url, "DELETE", f"/alerts/webhooks/{hook}").status_code == 204
    assert admin(astack.url, "DELETE", f"/alerts/webhooks/{hook}").status_code == 404


def _webhook_rows(db_url: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import select

    from tollway.store.db import create_engine
    from tollway.store.tables import alert_webhooks

    from .fixtures_gateway import run_async

    async def rows() -> list[tuple[Any, ...]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in await conn.execute(select(alert_webhooks))]
        finally:
            await engine.dispose()

    result: list[tuple[Any, ...]] = run_async(rows())
    return result


def test_cli_manages_webhooks_locally_and_remotely(
    astack: Stack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tollway.cli.main import app

    runner = CliRunner()
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", astack.db_url)
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    monkeypatch.delenv("TOLLWAY_ADMIN_SECRET", raising=False)
    monkeypatch.chdir(astack.tmp)  # the server secret file lives beside the database
    get_settings.cache_clear()
    remote = ["--url", astack.url, "--admin-secret", ADMIN]

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result.stdout

    try:
        added = json.loads(
            cli("alerts", "add", "-n", "cli-hook", "--webhook-url", receiver.url,
                "--kinds", "budget,key_expiry", "--secret", HOOK_SECRET, "--json")
        )  # fmt: skip
        hook = str(added["info"]["id"])
        assert cli("alerts", "list") == cli("alerts", "list", *remote)
        assert "cli-hook" in cli("alerts", "list") and "T0KEN" not in cli("alerts", "list")
        assert "took the test alert" in cli("alerts", "test", hook, *remote)
        assert "took the test alert" in cli("alerts", "test", hook)  # locally, same secret
        assert len(receiver.taken()) == 2
        assert "disabled" in cli("alerts", "disable", hook, *remote)
        bad = runner.invoke(app, ["alerts", "add", "-n", "x", "--webhook-url", receiver.url,
                                  "--kinds", "everything"])  # fmt: skip
        assert bad.exit_code == 2
        recent = cli("alerts", "recent", "--json", *remote)
        assert json.loads(recent) == json.loads(cli("alerts", "recent", "--json"))
        assert "Removed" in cli("alerts", "remove", hook)
        assert "no webhook" in runner.invoke(app, ["alerts", "remove", hook, *remote]).stderr
    finally:
        get_settings.cache_clear()


def test_upstream_with_a_rejected_key_alerts_as_down(astack: Stack, receiver: Receiver) -> None:
    hook = add_hook(astack.url, receiver, "down-hook", ["upstream_down"])
    try:
        astack.reset()
        astack.b.behaviour.mode = "reject_key"
        assert chat(astack.url, astack.key, "other-model").status_code == 502
        (alert,) = receiver.wait_for(1)
        assert alert["alert"]["kind"] == "upstream_down"
        assert alert["alert"]["health"] == "key_rejected" and alert["alert"]["upstream"] == "b"
        assert astack.b.api_key not in json.dumps(alert)
    finally:
        astack.reset()
        admin(astack.url, "DELETE", f"/alerts/webhooks/{hook}")


async def test_retries_wait_longer_each_time(receiver: Receiver) -> None:
    from tollway.services.alert_delivery import deliver
    from tollway.services.alerts import Target

    receiver.fail_first = 1000
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    target = Target(id=1, name="t", url=receiver.url, secret=HOOK_SECRET, kinds=None)
    async with httpx.AsyncClient() as client:
        error = await deliver(client, target, b"{}", 4, 2.0, sleep=sleep)
    assert waits == [2.0, 4.0, 8.0] and len(receiver.posts) == 4
    assert error == "HTTP 500 (try 4 of 4)"
