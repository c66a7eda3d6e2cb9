"""Web UI sessions that the database cannot forge and an admin can revoke; the usage CSV a
spreadsheet cannot run. A real Tollway (uvicorn thread), logins over HTTP."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tollway.core.settings import get_settings
from tollway.services.admin_secret import ensure_admin_secret, reset_admin_secret
from tollway.store.db import create_engine
from tollway.store.tables import kv

from .admin_http import login, page_status
from .fixtures_gateway import Stack, run_async

FORMULA_MODEL = '=HYPERLINK("x")'


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """Tollway on a default install: the admin secret made as `tollway init` makes it (only
    its hash, in `kv`), no TOLLWAY_SECRET_KEY; prices for the formula-named model."""
    tmp = tmp_path_factory.mktemp("sessions")
    s = Stack(tmp, config_extra={"prices": {FORMULA_MODEL: {"input": 0.01, "output": 0.01}}})

    async def make() -> str:
        engine = create_engine(s.db_url)
        try:
            secret = await ensure_admin_secret(engine, s.settings)
            assert secret is not None
            return secret
        finally:
            await engine.dispose()

    yield s, run_async(make())
    s.stop()


def _kv_values(db_url: str) -> list[str]:
    async def read() -> list[str]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                return [str(v) for v in (await conn.execute(select(kv.c.value))).scalars()]
        finally:
            await engine.dispose()

    result: list[str] = run_async(read())
    return result


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_a_cookie_forged_from_the_database_is_refused(stored: tuple[Stack, str]) -> None:
    stack, secret = stored
    values = _kv_values(stack.db_url)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert digest in values  # the attacker has what `tollway init` stored
    expires, csrf = int(time.time()) + 3600, "x" * 32
    forged = []
    for value in values:
        # The old derivation (admin secret's hash, no TOLLWAY_SECRET_KEY) and cookie format...
        old_key = hashlib.sha256(f"tollway-ui-session\0{value}\0".encode()).digest()
        payload = f"v1.{expires}.{csrf}"
        forged.append(f"{payload}.{_mac(old_key, payload)}")
        # ...and today's format, keyed by anything the database holds.
        for key in (old_key, value.encode(), hmac.new(value.encode(), digest.encode(), "sha256")):
            material = key if isinstance(key, bytes) else key.digest()
            for generation in range(3):
                payload = f"v2.{generation}.{expires}.{csrf}"
                forged.append(f"{payload}.{_mac(material, payload)}")
    for cookie in forged:
        assert page_status(stack.url, cookie) == 303, cookie
    answer, real = login(stack.url, secret)
    assert answer.status_code == 303 and real is not None
    assert page_status(stack.url, real) == 200  # the check above can fail


def test_logout_everywhere_from_the_admin_api_ends_a_copied_cookie(
    stored: tuple[Stack, str],
) -> None:
    stack, secret = stored
    _, mine = login(stack.url, secret)
    _, copied = login(stack.url, secret)
    assert mine and copied and page_status(stack.url, copied) == 200
    answer = httpx.post(
        stack.url + "/admin/api/sessions/revoke", headers={"Authorization": f"Bearer {secret}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["generation"] >= 1
    assert page_status(stack.url, copied) == 303
    assert page_status(stack.url, mine) == 303
    _, fresh = login(stack.url, secret)
    assert fresh and page_status(stack.url, fresh) == 200


def test_usage_csv_escapes_formulas_and_writes_fixed_point_costs(
    stored: tuple[Stack, str],
) -> None:
    stack, secret = stored
    admin = {"Authorization": f"Bearer {secret}"}
    # A database upstream with a key, on an install without TOLLWAY_SECRET_KEY: the server
    # secret made at start encrypts it.
    added = httpx.post(
        stack.url + "/admin/api/upstreams",
        headers=admin,
        json={
            "name": "formula",
            "base_url": stack.a.base_url,
            "api_key": stack.a.api_key,
            "models": [FORMULA_MODEL],
        },
    )
    assert added.status_code == 201, added.text
    reply = stack.client().chat.completions.create(
        model=FORMULA_MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.usage is not None
    row = stack.row(stack.a.seen[-1].headers["X-Request-Id"])
    assert row["model"] == FORMULA_MODEL and 0 < row["cost_usd"] < 1e-4

    _, cookie = login(stack.url, secret)
    assert cookie
    answer = httpx.get(stack.url + "/usage.csv", headers={"Cookie": f"tollway_session={cookie}"})
    assert answer.status_code == 200, answer.text
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    mine = [r for r in rows if r["request_id"] == row["request_id"]]
    assert len(mine) == 1
    assert mine[0]["model"] == "'" + FORMULA_MODEL  # shown as text, never evaluated
    cost = mine[0]["cost_usd"]
    assert "e" not in cost.lower() and cost.startswith("0.0000"), cost
    assert float(cost) == pytest.approx(row["cost_usd"])
    assert mine[0]["prompt_tokens"] == str(row["prompt_tokens"])


def test_csv_cells() -> None:
    from tollway.services.csv_cells import cell

    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert cell(text) == "'" + text
    assert cell("gpt-4o") == "gpt-4o" and cell(None) == ""
    assert cell(-3) == -3  # a number from a numeric column stays a number
    assert cell(-2.5) == "-2.5" and cell(2.0000000000000002e-07) == "0.00000020000000000000002"
    assert cell(1e21) == "1000000000000000000000" and cell(3.0) == "3"


def test_the_server_secret_file_is_private(stored: tuple[Stack, str]) -> None:
    stack, _ = stored
    path = Path(f"{stack.tmp / 'tollway.db'}.secret")
    assert path.stat().st_mode & 0o777 == 0o600


# Last: it replaces the admin secret the tests above log in with.
def test_logout_everywhere_from_the_cli_and_a_new_admin_secret_end_sessions(
    stored: tuple[Stack, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tollway.cli.main import app

    stack, secret = stored
    _, cookie = login(stack.url, secret)
    assert cookie and page_status(stack.url, cookie) == 200
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", stack.db_url)
    monkeypatch.delenv("TOLLWAY_ADMIN_SECRET", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["logout-everywhere"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert page_status(stack.url, cookie) == 303

    _, cookie = login(stack.url, secret)
    assert cookie and page_status(stack.url, cookie) == 200

    async def reset() -> str:
        engine = create_engine(stack.db_url)
        try:
            return await reset_admin_secret(engine)
        finally:
            await engine.dispose()

    new_secret = run_async(reset())
    assert page_status(stack.url, cookie) == 303
    assert login(stack.url, secret)[1] is None
    _, cookie = login(stack.url, new_secret)
    assert cookie and page_status(stack.url, cookie) == 200
