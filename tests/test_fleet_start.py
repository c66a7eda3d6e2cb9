"""Several instances started at once on an empty or old database all come up (migrations
run under a lock), `tollway migrate`, and `tollway serve`'s options."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

import tollway.app
from tollway import __version__
from tollway.cli import entry
from tollway.core.settings import Settings, get_settings
from tollway.store.db import alembic_config, create_engine, script_heads

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, run_async, write_config
from .servers import GatewayProcess, free_port, wait_ready

REPO = Path(__file__).resolve().parent.parent


def _start_three(db_url: str, tmp_path: Path) -> None:
    """Three `tollway serve` processes started together; each must come up and serve."""
    up = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    config = write_config(
        tmp_path / "tollway.yaml",
        [{"name": "a", "base_url": up.base_url, "api_key": up.api_key, "models": ["gpt-test"]}],
    )
    env = {
        "TOLLWAY_DATABASE_URL": db_url,
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_LOG_LEVEL": "warning",
    }
    procs = [GatewayProcess(env, tmp_path) for _ in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(GatewayProcess.start, procs))  # raises with the log of one that died
        secret = make_key(db_url)
        for proc in procs:
            client = openai.OpenAI(api_key=secret, base_url=proc.url + "/v1", max_retries=0)
            reply = client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content
    finally:
        for proc in procs:
            proc.stop()
        up.stop()


async def _revisions(db_url: str) -> set[str]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            return {str(r) for r in rows.scalars()}
    finally:
        await engine.dispose()


@pytest.mark.postgres
def test_three_instances_start_at_once_on_an_empty_postgres(
    pg_url_sync: str, tmp_path: Path
) -> None:
    _start_three(pg_url_sync, tmp_path)
    assert run_async(_revisions(pg_url_sync)) == set(script_heads())


@pytest.mark.postgres
def test_three_instances_start_at_once_on_an_old_postgres(pg_url_sync: str, tmp_path: Path) -> None:
    from alembic import command

    async def to_first() -> None:
        engine = create_engine(pg_url_sync)
        try:
            async with engine.begin() as conn:

                def first(connection: object) -> None:
                    cfg = alembic_config(pg_url_sync)
                    cfg.attributes["connection"] = connection
                    command.upgrade(cfg, "0001")

                await conn.run_sync(first)
        finally:
            await engine.dispose()

    run_async(to_first())
    assert run_async(_revisions(pg_url_sync)) == {"0001"}
    _start_three(pg_url_sync, tmp_path)
    assert run_async(_revisions(pg_url_sync)) == set(script_heads())


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update(extra)
    return env


def test_tollway_migrate_run_three_times_at_once_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "data" / "t.db"
    env = _clean_env(TOLLWAY_DATABASE_URL=f"sqlite+aiosqlite:///{db}")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tollway", "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Database schema up to date" in out
    assert run_async(_revisions(f"sqlite+aiosqlite:///{db}")) == set(script_heads())


def test_serve_options_override_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOLLWAY_PORT", "8123")
    get_settings.cache_clear()
    served: list[Settings] = []
    monkeypatch.setattr(tollway.app, "serve", served.append)
    argv = ["tollway", "serve", "--port", "9000", "--host", "0.0.0.0", "--workers", "3"]
    monkeypatch.setattr(sys, "argv", argv)
    entry.main()
    monkeypatch.setattr(sys, "argv", ["tollway", "serve"])
    entry.main()
    assert [(s.host, s.port, s.workers) for s in served] == [
        ("0.0.0.0", 9000, 3),
        ("127.0.0.1", 8123, 1),
    ]
    monkeypatch.setattr(sys, "argv", ["tollway", "serve", "--workers", "0"])
    with pytest.raises(SystemExit) as exited:
        entry.main()
    assert exited.value.code == 2 and len(served) == 2

    monkeypatch.setattr(sys, "argv", ["tollway", "--version"])
    entry.main()
    assert capsys.readouterr().out.strip() == f"tollway {__version__}"
    get_settings.cache_clear()


def test_typer_serve_takes_the_same_options_and_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from tollway.cli.main import app

    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    served: list[Settings] = []
    monkeypatch.setattr(tollway.app, "serve", served.append)
    result = CliRunner().invoke(app, ["serve", "--port", "9001", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert [(s.port, s.workers) for s in served] == [(9001, 2)]
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"tollway {__version__}"
    get_settings.cache_clear()


def test_scripts_run_passes_port_to_serve(tmp_path: Path) -> None:
    if not (REPO / ".venv" / "bin" / "tollway").exists():
        pytest.skip("scripts/run needs the repository's .venv (scripts/test creates it)")
    port = free_port()
    env = _clean_env(
        TOLLWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'run.db'}",
        TOLLWAY_ADMIN_SECRET="s" * 32,
        TOLLWAY_LOG_LEVEL="warning",
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "run"), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", 60)
    except RuntimeError:
        raise AssertionError((tmp_path / "run.log").read_text()) from None
    finally:
        proc.terminate()
        proc.wait(30)
