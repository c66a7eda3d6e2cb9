"""`tollway serve` starts fast: no admin/UI/CLI stack on its path, the web side built on first
use, and several workers forked from the master instead of spawned."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest

import tollway.app
from tollway.app import _BuiltOnFirstUse
from tollway.cli import entry
from tollway.core.settings import Settings, get_settings
from tollway.store.db import migrate_sync

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, write_config
from .limits_support import REDIS_URL, require_redis, unique_prefix
from .servers import GatewayProcess


def _python(script: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_serve_path_loads_no_admin_ui_cli_or_alembic(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "import tollway.cli.entry, tollway.app\n"
        "tollway.app.create_app()\n"
        "heavy = ('typer', 'rich', 'starlette', 'fastapi', 'jinja2', 'alembic')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    assert _python(script, tmp_path) == ""


def test_entry_runs_serve_directly_and_everything_else_through_typer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    served: list[Settings] = []
    monkeypatch.setattr(tollway.app, "serve", served.append)
    monkeypatch.setattr(sys, "argv", ["tollway", "serve"])
    entry.main()
    assert len(served) == 1 and isinstance(served[0], Settings)

    monkeypatch.setattr(sys, "argv", ["tollway", "serve", "--help"])
    with pytest.raises(SystemExit) as exited:
        entry.main()
    assert exited.value.code == 0 and "Run the gateway" in capsys.readouterr().out
    assert len(served) == 1
    get_settings.cache_clear()


async def test_web_app_is_built_once_by_concurrent_first_requests() -> None:
    builds: list[float] = []

    def build() -> Any:
        builds.append(time.monotonic())
        time.sleep(0.05)  # a slow import: the other first requests arrive meanwhile

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": scope["path"].encode()})

        return app

    lazy = _BuiltOnFirstUse(build)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    assert builds == []
    first = [lazy({"type": "http", "path": f"/{i}"}, receive, send) for i in range(8)]
    await asyncio.gather(*first)
    await lazy({"type": "http", "path": "/later"}, receive, send)
    assert len(builds) == 1
    bodies = sorted(m["body"] for m in sent if m["type"] == "http.response.body")
    assert bodies == sorted([f"/{i}".encode() for i in range(8)] + [b"/later"])


def test_fork_workers_makes_uvicorn_fork_with_default_signals(tmp_path: Path) -> None:
    """uvicorn's workers fork (this fails if uvicorn moves its context), and a worker does not
    keep the supervisor's signal handlers (it would ignore an early SIGTERM)."""
    script = (
        "import signal, sys\n"
        "from uvicorn import _subprocess\n"
        "from uvicorn.config import Config\n"
        "from tollway.app import fork_workers\n"
        "fork_workers()\n"
        "def supervisor(*a): pass\n"
        "signal.signal(signal.SIGTERM, supervisor)  # as uvicorn's supervisor does\n"
        "def target(sockets):\n"
        # SIG_DFL, or coverage's own handler when the test run measures subprocesses
        "    sys.exit(3 if signal.getsignal(signal.SIGTERM) is supervisor else 0)\n"
        "p = _subprocess.get_subprocess(Config('x:y'), target, [])\n"
        "p.start()\n"
        "p.join(20)\n"
        "print(type(p).__name__, p.exitcode)\n"
    )
    assert _python(script, tmp_path) == "ForkProcess 0"


def _children(pid: int) -> list[int]:
    found = []
    for entry_ in Path("/proc").iterdir():
        if entry_.name.isdigit():
            try:
                stat = (entry_ / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry_.name))
    return found


def test_two_workers_without_redis_refuse_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update(TOLLWAY_WORKERS="2", TOLLWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/t.db")
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "needs TOLLWAY_REDIS_URL" in done.stderr


@pytest.mark.redis
def test_two_workers_are_forked_and_serve(tmp_path: Path) -> None:
    require_redis()
    upstream = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}"
    config = write_config(
        tmp_path / "tollway.yaml",
        [{"name": "a", "base_url": upstream.base_url, "api_key": upstream.api_key,
          "models": ["gpt-test"]}],
    )  # fmt: skip
    migrate_sync(db_url)
    secret = make_key(db_url)
    env = {
        "TOLLWAY_DATABASE_URL": db_url,
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_WORKERS": "2",
        "TOLLWAY_REDIS_URL": REDIS_URL,
        "TOLLWAY_REDIS_PREFIX": unique_prefix(),
        "TOLLWAY_LOG_LEVEL": "warning",
    }
    proc = GatewayProcess(env, tmp_path)
    try:
        proc.start()
        assert proc.proc is not None
        master = proc.proc.pid
        workers = _children(master)
        assert len(workers) == 2
        cmdline = Path(f"/proc/{master}/cmdline").read_bytes()
        for pid in workers:  # forked: the master's command line, not multiprocessing's spawn
            assert Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline
        client = openai.OpenAI(api_key=secret, base_url=proc.url + "/v1", max_retries=0)
        for _ in range(4):
            reply = client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content
        proc.stop()
        assert proc.proc.returncode == 0
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        proc.stop()
        upstream.stop()
