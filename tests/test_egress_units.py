"""Egress pieces on their own: proxy resolution (upstream setting, HTTPS_PROXY / NO_PROXY),
the global CA bundle setting, config checks, and the background aiohttp clients reaching a
TLS upstream through the proxy with the same CA."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tollway.core.settings import Settings
from tollway.gateway.upstream_http import UpstreamClient, UpstreamError
from tollway.services.upstreams import call_upstream
from tollway.upstreams import egress
from tollway.upstreams.balance import probe_key
from tollway.upstreams.config import (
    ConfigError,
    GatewayConfig,
    RoutingConfig,
    UpstreamConfig,
    read_config,
)
from tollway.upstreams.egress import Egress, EgressDefaults, Proxy, egress_defaults, proxy_url_for
from tollway.upstreams.manager import UpstreamManager
from tollway.upstreams.pool import Pool

from .connect_proxy import ConnectProxy
from .fake_upstream import FakeUpstream
from .local_ca import LocalCA


@pytest.fixture(scope="module")
def tls_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeUpstream, LocalCA]]:
    tmp = tmp_path_factory.mktemp("egress-units")
    ca = LocalCA(tmp)
    ctx, _ = ca.server_context("localhost")
    up = FakeUpstream("tls-unit", "sk-upstream-SECRET-unit", tls=ctx).start()
    yield up, ca
    up.stop()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    p = ConnectProxy().start()
    yield p
    p.stop()


def test_proxy_resolution_follows_the_upstream_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example,.lan")
    https, http = "https://api.openai.com/v1", "http://vllm:8000/v1"
    assert proxy_url_for(https, None, True) == "http://corp:3128"
    assert proxy_url_for(http, None, True) is None  # no HTTP_PROXY set
    monkeypatch.setenv("HTTP_PROXY", "http://plain-corp:3128")
    assert proxy_url_for(http, None, True) == "http://plain-corp:3128"
    assert proxy_url_for("https://internal.example/v1", None, True) is None
    assert proxy_url_for("https://gpu.lan/v1", None, True) is None
    assert proxy_url_for(https, None, False) is None  # TOLLWAY_UPSTREAM_TRUST_ENV=false
    assert proxy_url_for(https, Egress(proxy="direct"), True) is None
    assert proxy_url_for(https, Egress(proxy="http://other:8080"), False) == "http://other:8080"
    p = Proxy.parse("http://us%40er:p%3Ass@proxy.example:3128")
    assert (p.host, p.port, p.where, p.user, p.password) == (
        "proxy.example",
        3128,
        "proxy.example:3128",
        "us@er",
        "p:ss",
    )
    assert p.auth_line == b"proxy-authorization: Basic dXNAZXI6cDpzcw==\r\n"
    with pytest.raises(ValueError, match="http:// URL"):
        Proxy.parse("https://proxy.example:443")


def test_settings_for_the_ca_bundle_and_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOLLWAY_UPSTREAM_CA_BUNDLE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("TOLLWAY_UPSTREAM_TRUST_ENV", "false")
    with pytest.raises(ValueError, match="not a readable file"):
        egress_defaults(Settings())  # a missing bundle stops the start
    (tmp_path / "ca.pem").write_text("-")
    assert egress_defaults(Settings()) == EgressDefaults(str(tmp_path / "ca.pem"), False)
    monkeypatch.delenv("TOLLWAY_UPSTREAM_CA_BUNDLE")
    monkeypatch.delenv("TOLLWAY_UPSTREAM_TRUST_ENV")
    assert egress_defaults(Settings()) == EgressDefaults(None, True)


async def test_the_global_ca_bundle_is_trusted_and_the_system_store_is_not_enough(
    tls_up: tuple[FakeUpstream, LocalCA],
) -> None:
    up, ca = tls_up
    headers = f"authorization: Bearer {up.api_key}\r\n".encode()
    trusting = UpstreamClient(2, 5, egress=EgressDefaults(str(ca.pem), trust_env=False))
    resp = await trusting.request(up.base_url, b"GET", b"/models", headers, b"")
    assert resp.status == 200 and b"tls-unit-model" in await resp.read()
    resp.release()
    system = UpstreamClient(2, 5, egress=EgressDefaults(None, trust_env=False))
    with pytest.raises(UpstreamError, match="certificate verification failed"):
        await system.request(up.base_url, b"GET", b"/models", headers, b"")
    await trusting.close()
    await system.close()


async def test_https_proxy_from_the_environment_and_no_proxy(
    tls_up: tuple[FakeUpstream, LocalCA], proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    up, ca = tls_up
    for name in ("https_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    headers = f"authorization: Bearer {up.api_key}\r\n".encode()
    client = UpstreamClient(2, 5, egress=EgressDefaults(str(ca.pem), trust_env=True))
    for _ in range(2):
        resp = await client.request(up.base_url, b"GET", b"/models", headers, b"")
        assert resp.status == 200
        await resp.read()
        resp.release()
    assert proxy.tunnels == [f"localhost:{up.port}".encode()]
    await client.close()
    monkeypatch.setenv("NO_PROXY", "localhost")
    direct = UpstreamClient(2, 5, egress=EgressDefaults(str(ca.pem), trust_env=True))
    resp = await direct.request(up.base_url, b"GET", b"/models", headers, b"")
    assert resp.status == 200
    resp.release()
    assert len(proxy.tunnels) == 1  # NO_PROXY: straight to the upstream
    await direct.close()


async def test_background_calls_use_the_ca_bundle_and_the_proxy(
    tls_up: tuple[FakeUpstream, LocalCA],
    proxy: ConnectProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    up, ca = tls_up
    entry = {"name": "bg", "base_url": up.base_url, "api_key": up.api_key}
    config = GatewayConfig(
        upstreams=[
            UpstreamConfig(**entry, ca_bundle=str(ca.pem), proxy=proxy.url),
            UpstreamConfig(**{**entry, "name": "bg-untrusted"}, proxy="direct"),
            UpstreamConfig(**{**entry, "name": "bg-insecure", "models": ["x"]}, verify=False),
        ],
        # Discovery runs below, by hand: the background one would add a tunnel of its own.
        routing=RoutingConfig(discover_models=False),
    )
    settings = Settings(upstream_trust_env=False, database_url="sqlite+aiosqlite://")
    manager = UpstreamManager(Pool(), settings, None, config=config, base_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="tollway.upstreams"):
        await manager.start()

    async def fresh_session() -> aiohttp.ClientSession:
        # A new session for each call, so each one needs a tunnel of its own.
        assert manager.session is not None
        await manager.session.close()
        manager.session = aiohttp.ClientSession()
        return manager.session

    try:
        await manager.discover_models()
        bg = manager.pool.by_name["bg"]
        bg.consecutive_failures = 1  # resting: the active health check calls it
        await fresh_session()
        await manager.check_health()
        assert bg.consecutive_failures == 0
        session = await fresh_session()
        assert await probe_key(session, bg, "openrouter", manager.net) == 100.0
        tested = await call_upstream(bg, net=manager.net)
        assert tested.ok and tested.status == 200
        assert not (await call_upstream(manager.pool.by_name["bg-untrusted"], net=manager.net)).ok
    finally:
        await manager.stop()
    found = {u.name: u.discovered_models for u in manager.pool.upstreams if u.models is None}
    assert found == {"bg": frozenset({"tls-unit-model"}), "bg-untrusted": None}
    # discovery, health check, balance probe, Test: each through a tunnel of the proxy
    assert proxy.tunnels == [f"localhost:{up.port}".encode()] * 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "TLS VERIFICATION IS OFF" in w] == [
        f"TLS VERIFICATION IS OFF for upstream bg-insecure (verify: false): anyone on the path "
        f"to {up.base_url} can read and change its traffic, keys included"
    ]


def test_without_a_system_ca_store_certifi_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    loaded: list[str | None] = []
    real = ssl.create_default_context

    def spy(*args: object, cafile: str | None = None, **kw: object) -> ssl.SSLContext:
        loaded.append(cafile)
        return real(cafile=cafile)

    monkeypatch.setattr(egress, "system_store_present", lambda: False)
    monkeypatch.setattr(egress.ssl, "create_default_context", spy)
    egress.tls_context.cache_clear()
    try:
        context = egress.tls_context()
    finally:
        egress.tls_context.cache_clear()
    assert loaded == [certifi.where()]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_config_checks_network_settings(tmp_path: Path) -> None:
    path = tmp_path / "tollway.yaml"
    base = "upstreams:\n  - name: x\n    base_url: https://api.example.com/v1\n"
    (tmp_path / "ca.pem").write_text("-")
    path.write_text(base + "    ca_bundle: ca.pem\n")  # relative to the config file
    cfg = read_config(path).upstreams[0]
    assert cfg.ca_bundle == str(tmp_path / "ca.pem")
    cases = {
        "    ca_bundle: missing.pem\n": "not a readable file",
        "    proxy: https://user:SECRET@proxy:443\n": "http:// URL",
        "    deployments: {gpt-4o: prod}\n": "provider: azure",
    }
    for extra, message in cases.items():
        path.write_text(base + extra)
        with pytest.raises(ConfigError, match=message) as info:
            read_config(path)
        assert "SECRET" not in str(info.value)
