"""The CLI beyond the seed's commands: init's admin secret, update-key and the limit options,
usage reports and CSV, upstreams; and every command against a running Tollway (--url) as
well as on the database, with the gateway seeing the changes at once."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from tollway.core.settings import get_settings

from .fixtures_gateway import Stack

runner = CliRunner()
SECRET = "cli-admin-secret-0123456789abcdef"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def run(*args: str, code: int = 0, input: str | None = None) -> tuple[str, str]:
    from tollway.cli.main import app

    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
    return result.stdout, result.stderr


def secret_in(text: str, prefix: str = "tw-") -> str:
    return next(w for w in text.split() if w.startswith(prefix))


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", url)
    monkeypatch.delenv("TOLLWAY_ADMIN_SECRET", raising=False)
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


# --- init and the admin secret ----------------------------------------------------------------


def test_init_creates_the_admin_secret_once(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tollway.services.admin_secret import load_verifier
    from tollway.store.db import create_engine

    from .fixtures_gateway import run_async

    stdout, _ = run("init")
    secret = secret_in(stdout, "twa-")
    assert stdout.count(secret) == 1 and "shown only this once" in stdout and "hash" in stdout
    assert secret.encode() not in Path(db.removeprefix("sqlite+aiosqlite:///")).read_bytes()

    async def check(candidate: str) -> bool:
        engine = create_engine(db)
        try:
            return (await load_verifier(engine, get_settings())).check(candidate)
        finally:
            await engine.dispose()

    assert run_async(check(secret)) and not run_async(check(secret + "x"))
    again, _ = run("init")
    assert "twa-" not in again and "already set" in again
    reset, _ = run("init", "--reset-admin-secret")
    new = secret_in(reset, "twa-")
    assert new != secret and run_async(check(new)) and not run_async(check(secret))

    monkeypatch.setenv("TOLLWAY_ADMIN_SECRET", "from-the-environment-123")
    get_settings.cache_clear()
    env, _ = run("init")
    assert "twa-" not in env and "TOLLWAY_ADMIN_SECRET" in env
    monkeypatch.setenv("TOLLWAY_ADMIN_SECRET", "short")
    get_settings.cache_clear()
    _, stderr = run("init", code=1)
    assert "shorter than 16" in stderr and "short" not in stderr.replace("shorter", "")


# --- keys: limits and update-key --------------------------------------------------------------


def test_create_with_limits_and_update_key(db: str) -> None:
    run("init")
    created = json.loads(
        run(
            "create-key", "-n", "lim", "-r", "60", "--rpd", "1000", "--tpm", "5000", "--tpd", "0",
            "--token-quota", "1000000", "--budget", "25.5", "--budget-period", "monthly",
            "--max-parallel", "4", "--json",
        )[0]
    )  # fmt: skip
    assert (created["rpm"], created["rpd"], created["tpm"], created["tpd"]) == (
        60,
        1000,
        5000,
        None,
    )
    assert (created["token_quota"], created["budget_usd"], created["budget_period"]) == (
        1000000,
        25.5,
        "monthly",
    )
    assert created["max_parallel"] == 4
    kid = str(created["id"])

    updated = json.loads(
        run(
            "update-key", kid, "-n", "renamed", "-r", "0", "--tpm", "9", "--email", "o@x.io",
            "-e", "30", "--models", "a, b", "--json",
        )[0]
    )  # fmt: skip
    assert (updated["name"], updated["rpm"], updated["tpm"], updated["email"]) == (
        "renamed",
        None,
        9,
        "o@x.io",
    )
    assert updated["models"] == ["a", "b"] and updated["expires_at"] is not None
    assert updated["rpd"] == 1000  # untouched
    cleared = json.loads(
        run("update-key", kid, "--email", "", "-e", "0", "--models", "*", "--json")[0]
    )
    assert (cleared["email"], cleared["expires_at"], cleared["models"]) == (None, None, None)
    text, _ = run("update-key", kid, "--budget", "0")
    assert "updated" in text and "renamed" in text

    _, stderr = run("update-key", kid, code=2)
    assert "nothing to change" in stderr
    _, stderr = run("update-key", kid, "--budget-period", "yearly", code=2)
    assert "budget-period" in stderr
    _, stderr = run("update-key", "4242", "-n", "x", code=1)
    assert "no key with id 4242" in stderr
    _, stderr = run("create-key", "-n", "x", "--rpd", "-1", code=2)
    _, stderr = run("update-key", kid, "--email", "bad", code=1)
    assert "email" in stderr


# --- usage ------------------------------------------------------------------------------------


def seed_usage(db: str, key_id: int) -> None:
    from datetime import UTC, datetime, timedelta

    from tollway.core.types import UsageEvent
    from tollway.store.db import create_engine
    from tollway.store.usage_writer import write_usage

    from .fixtures_gateway import run_async

    now = datetime.now(UTC)

    async def go() -> None:
        engine = create_engine(db)
        try:
            events = [
                UsageEvent((now - timedelta(hours=h)).timestamp(), f"r{h}", key_id, "POST",
                           "/v1/chat/completions", "gpt-a" if h % 2 else "gpt-b", upstream="up",
                           status=200 if h else 500, total_tokens=10, cost_usd=0.5, latency_ms=20)
                for h in range(5)
            ] + [UsageEvent((now - timedelta(days=3)).timestamp(), "old", None, "GET",
                            "/v1/models", status=401)]  # fmt: skip
            await write_usage(engine, events)
        finally:
            await engine.dispose()

    run_async(go())


def test_usage_report_json_table_and_csv(db: str, tmp_path: Path) -> None:
    run("init")
    kid = json.loads(run("create-key", "-n", "u", "--json")[0])["id"]
    seed_usage(db, kid)
    rep = json.loads(run("usage", "--json")[0])
    assert rep["totals"]["requests"] == 6 and rep["bucket"] == "day"
    assert sum(p["requests"] for p in rep["series"]) == 6
    assert [k["key_id"] for k in rep["by_key"]] == [kid, 0]
    day = json.loads(run("usage", "--last", "24h", "--bucket", "hour", "--json")[0])
    assert day["totals"]["requests"] == 5 and len(day["series"]) in (24, 25)
    one = json.loads(run("usage", "--key", str(kid), "--model", "gpt-a", "--json")[0])
    assert one["totals"]["requests"] == 2 and one["key_id"] == kid
    text, _ = run("usage", "--top", "1")
    assert "Requests: 6 (errors: 2)" in text and "Top keys" in text and "gpt-b" in text

    out_file = tmp_path / "u.csv"
    msg, _ = run("usage", "--csv", str(out_file))
    assert "Wrote 6 record(s)" in msg
    rows = list(csv.DictReader(out_file.open()))
    assert sorted(r["request_id"] for r in rows) == ["old", "r0", "r1", "r2", "r3", "r4"]
    piped, _ = run("usage", "--csv", "-", "--last", "24h", "--key", str(kid))
    assert len(list(csv.DictReader(io.StringIO(piped)))) == 5

    run("usage", "--bucket", "week", code=2)
    run("usage", "--last", "soon", code=2)
    run("usage", "--last", "1d", "--start", "2026-01-01", code=2)
    _, stderr = run("usage", "--start", "2030-01-02", "--end", "2030-01-01", code=1)
    assert "start must be before end" in stderr
    stats = json.loads(run("key-stats", str(kid), "--last", "2h", "--json")[0])
    assert stats["totals"]["requests"] in (2, 3)  # whole hours: 2 or 3 buckets back


# --- against a running Tollway ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("cli-live"),
        admin_secret=SecretStr(SECRET),
        secret_key=SecretStr("cli-test-secret-key"),
    )
    yield s
    s.stop()


@pytest.fixture
def remote(live: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    # No database configured for the CLI itself: every call must go through the API.
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}")
    monkeypatch.delenv("TOLLWAY_ADMIN_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    return ["--url", live.url, "--admin-secret", SECRET]


def chat(stack: Stack, key: str) -> Any:
    return stack.client(key=key).chat.completions.with_raw_response.create(**CHAT)  # type: ignore[call-overload]


def test_remote_key_lifecycle_seen_by_the_gateway_at_once(live: Stack, remote: list[str]) -> None:
    stdout, _ = run("create-key", "-n", "remote", "-r", "100", *remote)
    secret = secret_in(stdout)
    assert chat(live, secret).status_code == 200  # works at once
    kid = json.loads(run("list-keys", "--search", secret[:10], "--json", *remote)[0])["items"][0][
        "id"
    ]
    got = json.loads(run("get-key", str(kid), "--json", *remote)[0])
    assert (got["name"], got["rpm"]) == ("remote", 100)
    assert "remote" in run("list-keys", *remote)[0]
    assert "renamed" in run("update-key", str(kid), "-n", "renamed", *remote)[0]

    assert "disabled" in run("disable-key", str(kid), *remote)[0]
    with pytest.raises(openai.PermissionDeniedError):  # refused on the very next request
        chat(live, secret)
    assert "active" in run("enable-key", str(kid), *remote)[0]
    assert chat(live, secret).status_code == 200

    ids = [chat(live, secret).headers["x-request-id"] for _ in range(2)]
    rows = [live.row(rid) for rid in ids]  # the usage writer has stored them
    stats = json.loads(run("key-stats", str(kid), "--json", *remote)[0])
    assert stats["totals"]["requests"] == 4  # 1 + 1 after enabling + 2, none refused counted
    assert stats["totals"]["total_tokens"] == sum(r["total_tokens"] for r in rows) * 2
    assert [r["request_id"] for r in stats["recent"][:2]] == ids[::-1]
    text, _ = run("key-stats", str(kid), *remote)
    assert "Requests: 4" in text and "/v1/chat/completions" in text

    rep = json.loads(run("usage", "--key", str(kid), "--json", *remote)[0])
    assert rep["totals"]["requests"] == 4
    piped, _ = run("usage", "--csv", "-", "--key", str(kid), *remote)
    assert [r["request_id"] for r in csv.DictReader(io.StringIO(piped))][-2:] == ids

    rotated = json.loads(run("rotate-key", str(kid), "--json", *remote)[0])
    assert rotated["id"] == kid and chat(live, rotated["key"]).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        chat(live, secret)
    assert "deleted" in run("delete-key", str(kid), "--yes", *remote)[0]
    _, stderr = run("get-key", str(kid), *remote, code=1)
    assert f"no key with id {kid}" in stderr


def test_key_created_on_the_database_works_at_once(live: Stack, monkeypatch: Any) -> None:
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", live.db_url)
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    get_settings.cache_clear()
    try:
        secret = secret_in(run("create-key", "-n", "local-to-live")[0])
        assert chat(live, secret).status_code == 200
    finally:
        get_settings.cache_clear()


def test_remote_errors(live: Stack, remote: list[str]) -> None:
    _, stderr = run("list-keys", "--url", live.url, "--admin-secret", "wrong-secret-xyz", code=1)
    assert "admin secret was refused" in stderr and "wrong-secret-xyz" not in stderr
    _, stderr = run("list-keys", "--url", live.url, code=1)
    assert "--admin-secret" in stderr
    _, stderr = run("list-keys", "--url", "http://127.0.0.1:9", "--admin-secret", "x", code=1)
    assert "cannot reach" in stderr
    _, stderr = run("list-keys", "--status", "bogus", *remote, code=1)
    assert "status" in stderr
    _, stderr = run("usage", "--csv", "-", "--start", "2030-01-02", "--end", "2030-01-01",
                    *remote, code=1)  # fmt: skip
    assert "start must be before end" in stderr


def test_upstreams_remote_and_local(live: Stack, remote: list[str], monkeypatch: Any) -> None:
    added = json.loads(
        run(
            "upstreams", "add", "-n", "cli-up", "--base-url", live.b.base_url,
            "--api-key", "-", "--models", "cli-model", "--json", *remote,
            input=live.b.api_key + "\n",
        )[0]
    )  # fmt: skip
    uid = str(added["id"])
    assert live.b.api_key not in json.dumps(added) and added["key_hint"]
    listed, _ = run("upstreams", "list", *remote)
    assert "cli-up" in listed and live.b.api_key not in listed
    # The config file's upstreams serve traffic too: listed, marked read-only.
    assert "3 upstream(s): 1 in the database, 2 read-only from the config file" in listed
    assert [u["name"] for u in json.loads(run("upstreams", "list", "--json", *remote)[0])] == [
        "cli-up"
    ]
    ok, _ = run("upstreams", "test", uid, *remote)
    assert ok.startswith("ok 200")
    status = {s["name"]: s for s in json.loads(run("upstreams", "status", "--json", *remote)[0])}
    assert {"a", "b", "cli-up"} <= set(status) and status["cli-up"]["source"] == "database"
    assert "cli-up" in run("upstreams", "status", *remote)[0]
    _, stderr = run("upstreams", "test", "999", *remote, code=1)
    assert "999" in stderr
    # A failed test reads as words (the upstream's code and message), never its raw JSON or
    # the stored key.
    wrong = json.loads(
        run(
            "upstreams", "add", "-n", "cli-wrong", "--base-url", live.b.base_url,
            "--api-key", "-", "--models", "cli-model", "--json", *remote,
            input="sk-wrong-upstream-key\n",
        )[0]
    )  # fmt: skip
    _, stderr = run("upstreams", "test", str(wrong["id"]), *remote, code=1)
    assert "failed HTTP 401: invalid_api_key: Incorrect API key provided" in stderr
    assert "{" not in stderr and "sk-wrong-upstream-key" not in stderr
    run("upstreams", "remove", str(wrong["id"]), "--yes", *remote)

    # The same database, read directly: the CLI on the gateway's host.
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", live.db_url)
    monkeypatch.setenv("TOLLWAY_CONFIG", str(live.config))
    monkeypatch.setenv("TOLLWAY_ADMIN_SECRET", SECRET)
    monkeypatch.setenv("TOLLWAY_SECRET_KEY", "cli-test-secret-key")
    get_settings.cache_clear()
    try:
        listed = run("upstreams", "list")[0]
        assert "cli-up" in listed and "1 in the database, 2 read-only" in listed
        local_status = json.loads(run("upstreams", "status", "--json")[0])
        assert {"a", "b", "cli-up"} <= {s["name"] for s in local_status}
        assert "configured pool" in run("upstreams", "status")[0]
        assert run("upstreams", "test", uid, "--json")[0].count('"ok": true') == 1
        run("upstreams", "remove", uid, input="n\n", code=1)
        assert "removed" in run("upstreams", "remove", uid, "--yes")[0]
        _, stderr = run("upstreams", "remove", uid, "--yes", code=1)
        assert uid in stderr
    finally:
        get_settings.cache_clear()
    assert json.loads(run("upstreams", "list", "--json", *remote)[0]) == []
    bad = run("upstreams", "add", "-n", "x", "--base-url", "http://x", "--weight", "-1", code=2)
    assert bad
