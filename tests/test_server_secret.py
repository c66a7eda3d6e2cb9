"""The server secret on a default install: `tollway init` writes it (mode 0600) beside the
SQLite database, `tollway upstreams add` encrypts with it, the gateway reads it at start, and
`tollway rotate-secret` re-encrypts every stored key (older admin-secret-encrypted rows too)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from tollway.core.server_secret import (
    BadSecretFile,
    secret_path,
    server_secret,
    write_secret_file,
)
from tollway.core.settings import Settings, get_settings
from tollway.store.db import create_engine
from tollway.store.tables import upstreams as upstreams_table
from tollway.upstreams.crypto import SecretBox, SecretKeyMissing, secret_box

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, run_async
from .servers import GatewayThread

runner = CliRunner()


def cli(*args: str, code: int = 0, input: str | None = None) -> str:
    from tollway.cli.main import app

    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == code, (args, result.output, result.exception)
    return result.output


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty directory and environment, as on a fresh machine."""
    for name in list(os.environ):
        if name.startswith("TOLLWAY_"):
            monkeypatch.delenv(name)
    url = f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}"
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("db", "sk-upstream-SECRET-dddd").start()
    yield fake
    fake.stop()


def _tokens(url: str) -> list[str]:
    async def read() -> list[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(select(upstreams_table.c.api_key_enc))
                return [str(t) for t in rows.scalars()]
        finally:
            await engine.dispose()

    result: list[str] = run_async(read())
    return result


def _served_through(url: str, fake: FakeUpstream) -> None:
    """A request through a freshly started gateway reaches `fake` with its own key."""
    gateway = GatewayThread(Settings(database_url=url, usage_writer="inline")).start()
    try:
        key = make_key(url)
        import openai

        client = openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
        before = len(fake.seen)
        client.chat.completions.create(
            model="db-model", messages=[{"role": "user", "content": "hi"}]
        )
        assert len(fake.seen) == before + 1
        assert fake.seen[-1].headers["Authorization"] == f"Bearer {fake.api_key}"
    finally:
        gateway.stop()


def test_init_lets_the_cli_store_an_upstream_and_rotation_keeps_it_working(
    install: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    out = cli("init")
    path = tmp_path / "tollway.db.secret"
    assert "Server secret: created" in out and path.read_text().strip() not in out
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    cli("init")  # idempotent: the secret stays
    assert path.read_text() == first

    cli(
        "upstreams", "add", "-n", "db", "--base-url", upstream.base_url,
        "--api-key", "-", "--models", "db-model",
        input=upstream.api_key + "\n",
    )  # fmt: skip
    [token] = _tokens(install)
    assert upstream.api_key not in token
    _served_through(install, upstream)

    out = cli("rotate-secret", "--yes")
    assert "Re-encrypted 1 upstream key(s)" in out
    assert path.read_text() != first and path.stat().st_mode & 0o777 == 0o600
    assert not path.with_name(path.name + ".new").exists()
    [rotated] = _tokens(install)
    assert rotated != token
    with pytest.raises(ValueError):  # the old secret no longer opens it
        SecretBox(first.strip().encode()).decrypt(rotated)
    _served_through(install, upstream)


def test_rows_encrypted_by_older_versions_are_read_and_moved_by_rotation(
    install: str, tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = "legacy-admin-secret-0123456789"
    cli("init")
    # What an older Tollway stored: the key encrypted with a key derived from the admin secret.
    legacy = SecretBox(admin.encode())
    cli(
        "upstreams", "add", "-n", "db", "--base-url", upstream.base_url,
        "--models", "db-model",
    )  # fmt: skip

    async def store() -> None:
        engine = create_engine(install)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    upstreams_table.update().values(api_key_enc=legacy.encrypt(upstream.api_key))
                )
        finally:
            await engine.dispose()

    run_async(store())
    # Without the admin secret it cannot be read, and rotation refuses to lose it.
    out = cli("rotate-secret", "--yes", code=1)
    assert "db" in out
    monkeypatch.setenv("TOLLWAY_ADMIN_SECRET", admin)
    get_settings.cache_clear()
    cli("rotate-secret", "--yes")
    [token] = _tokens(install)
    assert secret_box(get_settings()).decrypt(token) == upstream.api_key
    monkeypatch.delenv("TOLLWAY_ADMIN_SECRET")
    get_settings.cache_clear()
    _served_through(install, upstream)  # the server secret alone opens it now


def test_the_secret_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert server_secret(Settings(database_url=url, secret_key=SecretStr("from-env"))) == "from-env"
    assert server_secret(Settings(database_url=url)) is None
    with pytest.raises(SecretKeyMissing):  # the admin secret no longer encrypts anything
        secret_box(Settings(database_url=url, admin_secret=SecretStr("admin-secret-123456")))
    path = tmp_path / "x.db.secret"
    assert write_secret_file(path, "one") and not write_secret_file(path, "two")
    assert server_secret(Settings(database_url=url)) == "one"
    path.chmod(0o644)
    with pytest.raises(BadSecretFile):
        server_secret(Settings(database_url=url))
    chosen = tmp_path / "elsewhere" / "secret"
    write_secret_file(chosen, "three")
    assert server_secret(Settings(database_url=url, secret_key_file=chosen)) == "three"
    pg = Settings(database_url="postgresql+asyncpg://u@127.0.0.1/db")
    assert secret_path(pg) == Path("tollway.secret")  # the current directory


def test_rotation_with_the_secret_in_the_environment_prints_the_new_one(
    install: str, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLWAY_SECRET_KEY", "the-old-shared-secret")
    get_settings.cache_clear()
    assert "TOLLWAY_SECRET_KEY (nothing stored)" in cli("init")
    cli(
        "upstreams", "add", "-n", "db", "--base-url", upstream.base_url,
        "--api-key", upstream.api_key, "--models", "db-model",
    )  # fmt: skip
    out = cli("rotate-secret", "--yes")
    new = next(w for w in out.split() if w.startswith("tws-"))
    [token] = _tokens(install)
    assert SecretBox(new.encode()).decrypt(token) == upstream.api_key
    assert not list(Path.cwd().glob("*.secret*"))  # nothing written to disk
