"""No configured value can inject a header line: control characters (CR, LF, NUL, other C0,
DEL) in an upstream key, a `headers:` value or a base URL are refused in YAML (a startup
error naming the upstream), the key list, PocketBase records and database rows (skipped,
logged by name), the admin API (422) and the CLI; never echoing the value."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from tollway.core.settings import get_settings
from tollway.store.tables import upstreams as table
from tollway.upstreams.config import ConfigError, load_upstreams
from tollway.upstreams.crypto import SecretBox
from tollway.upstreams.dbsource import load_db_upstreams
from tollway.upstreams.pocketbase import keys_from_records
from tollway.upstreams.target import Upstream

from .fixtures_gateway import Stack

INJECTED = "sk-live-0123\r\nX-Injected: yes"
SECRET = "header-values-admin-secret-0123"
BOX = SecretBox(b"header-values-secret-key")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('api_key: "sk-1\\r\\nX-Injected: yes"', "upstream x: api_key contains a control"),
        ('api_key: "sk-1\\u0000"', "api_key contains a control"),
        ('api_key: "sk-1\\u007f"', "api_key contains a control"),
        ("api_key: ${TW_TEST_INJECTED}", "upstream x: api_key contains a control"),
        ('headers: {X-Title: "a\\nX-Injected: yes"}', "the value of X-Title contains a control"),
        ('headers: {"Bad Name": "v"}', "not a valid header name"),
        ("headers: {Host: evil.example}", "Host is set by Tollway"),
        ("headers: {Authorization: Basic eA==}", "Authorization is set by Tollway"),
        ("headers: {Content-Length: '1'}", "Content-Length is set by Tollway"),
        ("pass_headers: [Authorization]", "Authorization is never passed"),
    ],
)
def test_yaml_refuses_control_characters_and_reserved_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, message: str
) -> None:
    monkeypatch.setenv("TW_TEST_INJECTED", INJECTED)
    cfg = write(
        tmp_path / "t.yaml", f"upstreams:\n  - name: x\n    base_url: http://a\n    {entry}\n"
    )
    with pytest.raises(ConfigError, match=message) as err:
        load_upstreams(cfg)
    assert "X-Injected" not in str(err.value) and "sk-1" not in str(err.value)


def test_yaml_refuses_a_control_character_in_base_url(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "t.yaml",
        'upstreams:\n  - {name: x, base_url: "http://a/v1\\r\\nX-Injected: yes"}\n',
    )
    with pytest.raises(ConfigError, match="upstream x: base_url contains a control") as err:
        load_upstreams(cfg)
    assert "X-Injected" not in str(err.value)


def test_key_list_entry_with_a_control_character_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "k.json", json.dumps({"keys": [{"name": "ok", "api_key": INJECTED}]}))
    cfg = write(
        tmp_path / "t.yaml", "upstreams:\n  - {name: v, base_url: 'http://a', key_list: k.json}\n"
    )
    with pytest.raises(ConfigError, match=r"keys\[0\]: api_key contains a control") as err:
        load_upstreams(cfg)
    assert "X-Injected" not in str(err.value)


def test_no_upstream_object_can_hold_a_control_character() -> None:
    with pytest.raises(ValueError, match="upstream u: api_key"):
        Upstream("u", "http://a", api_key=INJECTED)
    with pytest.raises(ValueError, match="upstream u: base_url"):
        Upstream("u", "http://a/v1\r\nX-Injected: yes")
    with pytest.raises(ValueError, match="upstream u: headers"):
        Upstream("u", "http://a", headers={"X-Title": "a\tb"})


def test_pocketbase_record_with_a_control_character_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="tollway.upstreams")
    keys = keys_from_records(
        [
            {"id": "rec1", "name": "good", "api_key": "sk-good-1"},
            {"id": "rec2", "name": "bad", "api_key": INJECTED},
            {"id": "rec3", "name": "padded", "api_key": " sk-good-3\n"},  # edges are trimmed
        ]
    )
    assert [k["name"] for k in keys] == ["good", "padded"] and keys[1]["api_key"] == "sk-good-3"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "rec2" in logged and "control character" in logged and "X-Injected" not in logged


async def test_database_row_with_a_control_character_is_skipped(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # Written around the service's check, as an older version or a direct SQL edit could.
    async with engine.begin() as conn:
        for name, key in (("good", "sk-good"), ("bad", INJECTED)):
            await conn.execute(
                insert(table).values(
                    name=name,
                    base_url="http://127.0.0.1:1/v1",
                    api_key_enc=BOX.encrypt(key),
                    aliases={},
                    weight=1.0,
                    provider="openai",
                    enabled=True,
                    serves_modelless=False,
                    extra={},
                    created_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC),
                )
            )
    caplog.set_level(logging.ERROR, logger="tollway.upstreams")
    assert [u.name for u in await load_db_upstreams(engine, BOX)] == ["good"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "upstream bad: api_key contains a control character" in logged
    assert "X-Injected" not in logged


def test_serve_refuses_to_start_naming_the_upstream(tmp_path: Path) -> None:
    write(
        tmp_path / "t.yaml",
        "upstreams:\n  - name: crlf-up\n    base_url: http://127.0.0.1:1/v1\n"
        "    api_key: ${TW_TEST_INJECTED}\n",
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update(
        TOLLWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/t.db",
        TOLLWAY_CONFIG=str(tmp_path / "t.yaml"),
        TOLLWAY_PORT=str(port),
        TW_TEST_INJECTED=INJECTED,
    )
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "upstream crlf-up: api_key contains a control character" in output
    assert "X-Injected" not in output and "sk-live-0123" not in output


# --- the admin API and the CLI on a running Tollway ------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("header-values"),
        admin_secret=SecretStr(SECRET),
        secret_key=SecretStr("header-values-secret-key"),
    )
    yield s
    s.stop()


def test_admin_api_refuses_a_key_with_a_control_character(stack: Stack) -> None:
    with httpx.Client(
        base_url=stack.url + "/admin/api", headers={"Authorization": f"Bearer {SECRET}"}
    ) as api:
        bad = {"name": "crlf", "base_url": stack.b.base_url, "api_key": INJECTED}
        resp = api.post("/upstreams", json=bad)
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["param"] == "api_key" and "control character" in error["message"]
        assert "X-Injected" not in resp.text and "sk-live" not in resp.text
        resp = api.post("/upstreams", json={**bad, "base_url": "http://a/v1\nX-Injected: yes"})
        assert resp.status_code == 422 and "X-Injected" not in resp.text

        made = api.post("/upstreams", json={**bad, "api_key": "sk-fine-0123456789"})
        assert made.status_code == 201, made.text
        uid = made.json()["id"]
        resp = api.patch(f"/upstreams/{uid}", json={"api_key": "sk-x\u0000"})
        assert resp.status_code == 422 and "control character" in resp.text
        assert api.delete(f"/upstreams/{uid}").status_code == 204
        assert api.get("/upstreams").json() == []


def test_cli_refuses_a_key_with_a_control_character(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tollway.cli.main import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    runner = CliRunner()
    add = ["upstreams", "add", "-n", "crlf", "--base-url", stack.b.base_url, "--api-key", INJECTED]
    remote = ["--url", stack.url, "--admin-secret", SECRET]
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, [*add, *remote])
        assert result.exit_code == 1, result.stdout
        assert "control character" in result.stderr and "X-Injected" not in result.stderr

        # On the database directly (the CLI on the gateway's host).
        monkeypatch.setenv("TOLLWAY_DATABASE_URL", stack.db_url)
        monkeypatch.setenv("TOLLWAY_SECRET_KEY", "header-values-secret-key")
        get_settings.cache_clear()
        result = runner.invoke(app, add)
        assert result.exit_code == 1, result.stdout
        assert "control character" in result.stderr and "X-Injected" not in result.stderr
    finally:
        get_settings.cache_clear()
