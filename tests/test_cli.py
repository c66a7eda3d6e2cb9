"""The `tollway` CLI against a real temporary SQLite database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tollway.core.settings import Settings, get_settings
from tollway.core.types import UsageEvent
from tollway.store.db import create_engine
from tollway.store.usage_writer import write_usage

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'cli.db'}"
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def cli(*args: str, input: str | None = None) -> object:
    from tollway.cli.main import app

    return runner.invoke(app, list(args), input=input)


def run(*args: str, code: int = 0, input: str | None = None) -> tuple[str, str]:
    result = cli(*args, input=input)
    assert result.exit_code == code, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    return result.stdout, result.stderr  # type: ignore[attr-defined]


def test_init_create_list_get(db: str, tmp_path: Path) -> None:
    stdout, _ = run("init")
    assert str(tmp_path / "sub" / "cli.db") in stdout
    run("init")  # idempotent

    stdout, _ = run("create-key", "-n", "Test App", "-r", "100", "-e", "90", "--models", "a,b")
    secret = next(w for w in stdout.split() if w.startswith("tw-"))
    assert stdout.count(secret) == 1 and "shown only once" in stdout

    listed = json.loads(run("list-keys", "--json")[0])
    assert listed["total"] == 1
    (item,) = listed["items"]
    assert (item["name"], item["rpm"], item["models"], item["status"]) == (
        "Test App",
        100,
        ["a", "b"],
        "active",
    )
    assert item["expires_at"] is not None and secret[:10] == item["prefix"]
    dumped = json.dumps(listed)
    assert secret not in dumped and "hash" not in dumped

    table, _ = run("list-keys")
    assert "Test App" in table and secret not in table

    got = json.loads(run("get-key", str(item["id"]), "--json")[0])
    assert got == item
    details, _ = run("get-key", str(item["id"]))
    assert "Test App" in details and "a, b" in details


def test_create_key_json_and_unlimited(db: str) -> None:
    run("init")
    stdout, stderr = run("create-key", "--name", "j", "--email", "j@x.io", "--json")
    data = json.loads(stdout)
    assert data["key"].startswith("tw-") and data["rpm"] is None and data["email"] == "j@x.io"
    assert data["expires_at"] is None and data["models"] is None
    assert "shown only once" in stderr


def test_errors_exit_1(db: str) -> None:
    _, stderr = run("list-keys", code=1)  # before init: no database file
    assert "run `tollway init` first" in stderr
    assert not list(Path.cwd().rglob("*.db"))  # and none was created by accident
    run("init")
    for cmd in ("get-key", "key-stats", "enable-key", "disable-key", "rotate-key"):
        stdout, stderr = run(cmd, "42", code=1)
        assert "no key with id 42" in stderr and not stdout
    _, stderr = run("delete-key", "42", "--yes", code=1)
    assert "no key with id 42" in stderr
    _, stderr = run("create-key", "-n", "x", "--email", "nope", code=1)
    assert "email" in stderr
    _, stderr = run("list-keys", "--status", "bogus", code=1)
    assert "status must be one of" in stderr


def test_database_error_exit_1(db: str) -> None:
    run("init")
    db_file = Path(db.removeprefix("sqlite+aiosqlite:///"))
    db_file.unlink()
    db_file.write_bytes(b"")  # exists but has no tables
    _, stderr = run("list-keys", code=1)
    assert "database error" in stderr and "tollway init" in stderr


def test_lifecycle_commands(db: str) -> None:
    run("init")
    created = json.loads(run("create-key", "-n", "life", "--json")[0])
    kid = str(created["id"])
    assert "disabled" in run("disable-key", kid)[0]
    assert json.loads(run("list-keys", "--status", "disabled", "--json")[0])["total"] == 1
    assert "active" in run("enable-key", kid)[0]
    rotated, _ = run("rotate-key", kid)
    new_secret = next(w for w in rotated.split() if w.startswith("tw-"))
    assert new_secret != created["key"]
    rotated_json = json.loads(run("rotate-key", kid, "--json")[0])
    assert rotated_json["id"] == created["id"] and rotated_json["key"] != new_secret
    run("delete-key", kid, input="n\n", code=1)  # declined: aborts, key stays
    run("get-key", kid)
    assert "deleted" in run("delete-key", kid, input="y\n")[0]
    run("get-key", kid, code=1)


def test_key_stats(db: str) -> None:
    run("init")
    kid = json.loads(run("create-key", "-n", "s", "--json")[0])["id"]

    async def seed() -> None:
        engine = create_engine(db)
        try:
            await write_usage(
                engine,
                [
                    UsageEvent(1.7e9, "r1", kid, "POST", "/v1/chat/completions", "gpt-a",
                               status=200, total_tokens=30, cost_usd=0.01, latency_ms=12.4),
                    UsageEvent(1.7e9 + 1, "r2", kid, "GET", "/v1/models", status=500),
                ],
            )  # fmt: skip
        finally:
            await engine.dispose()

    asyncio.run(seed())
    stats = json.loads(run("key-stats", str(kid), "--json")[0])
    assert stats["totals"]["requests"] == 2 and stats["totals"]["errors"] == 1
    assert stats["totals"]["total_tokens"] == 30
    assert [r["request_id"] for r in stats["recent"]] == ["r2", "r1"]
    text, _ = run("key-stats", str(kid), "--recent", "1")
    assert "/v1/chat/completions" in text and "gpt-a" in text and "(none)" in text
    assert "Requests: 2" in text


def test_serve_calls_app_serve(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []
    fake = types.ModuleType("tollway.app")
    fake.serve = seen.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tollway.app", fake)
    run("serve")
    assert len(seen) == 1 and seen[0].database_url == db


def test_module_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "TOLLWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "tollway.cli", "init"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Database ready" in proc.stdout
