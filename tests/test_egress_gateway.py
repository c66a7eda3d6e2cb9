"""TLS to upstreams and outbound proxies, through Tollway with the openai SDK: a real HTTPS
fake upstream whose certificate comes from a CA made in the test, and a real local HTTP proxy
(CONNECT tunnels, absolute-form plain requests, Basic proxy credentials)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tollway.upstreams.config import read_config
from tollway.upstreams.manager import warn_unverified

from .connect_proxy import ConnectProxy
from .fake_upstream import FakeUpstream
from .fixtures_gateway import Stack
from .local_ca import Handshakes, LocalCA

PROXY_PASSWORD = "proxy-SECRET-pw"


class Env:
    def __init__(self, stack: Stack, tls: FakeUpstream, plain: FakeUpstream) -> None:
        self.stack = stack
        self.tls = tls
        self.plain = plain
        self.handshakes = Handshakes()
        self.proxy = ConnectProxy()
        self.bad_proxy = ConnectProxy()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("egress")
    ca = LocalCA(tmp)
    server_ctx, handshakes = ca.server_context("localhost")
    tls = FakeUpstream("tls", "sk-upstream-SECRET-tls1", tls=server_ctx).start()
    plain = FakeUpstream("plain", "sk-upstream-SECRET-plain").start()
    proxy = ConnectProxy("proxyuser", PROXY_PASSWORD).start()
    authed = f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
    wrong = f"http://proxyuser:wrong-SECRET@127.0.0.1:{proxy.port}"
    ip_url = f"https://127.0.0.1:{tls.port}/v1"  # the certificate names localhost only

    def up(name: str, model: str, base: FakeUpstream, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": base.base_url,
            "api_key": base.api_key,
            "models": [model],
            **extra,
        }

    upstreams = [
        up("tls", "tls-model", tls, ca_bundle=str(ca.pem)),
        up("untrusted", "untrusted-model", tls),
        up("by-ip", "ip-model", tls, ca_bundle=str(ca.pem), base_url=ip_url),
        up("insecure", "insecure-model", tls, verify=False),
        up("proxied", "proxied-model", tls, ca_bundle=str(ca.pem), proxy=authed),
        up("bad-proxy", "bad-proxy-model", tls, ca_bundle=str(ca.pem), proxy=wrong),
        up("plain-proxied", "plain-proxied-model", plain, proxy=authed),
    ]
    stack = Stack(tmp, upstreams=upstreams, upstream_trust_env=False)
    e = Env(stack, tls, plain)
    e.handshakes = handshakes
    e.proxy = proxy
    yield e
    stack.stop()
    tls.stop()
    plain.stop()
    proxy.stop()


def _chat(client: openai.OpenAI, model: str) -> str:
    result = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return result.choices[0].message.content or ""


def _refused(env: Env, model: str) -> dict[str, Any]:
    with pytest.raises(openai.APIStatusError) as info:
        _chat(env.stack.client(), model)
    assert info.value.status_code == 502
    body: dict[str, Any] = info.value.response.json()["error"]
    text = info.value.response.text
    for secret in (env.tls.api_key, env.stack.key, PROXY_PASSWORD):
        assert secret not in text
    return body


def test_https_upstream_verified_with_its_ca_bundle_one_handshake_for_many_requests(
    env: Env,
) -> None:
    before = env.handshakes.count
    client = env.stack.client()
    for _ in range(5):
        assert _chat(client, "tls-model") == "Hello from upstream"
    # Keep-alive over TLS: five requests, one handshake, with SNI naming the host.
    assert env.handshakes.count - before == 1
    assert env.handshakes.names[-1] == "localhost"
    seen = env.tls.seen[-1]
    assert seen.headers["Authorization"] == f"Bearer {env.tls.api_key}"


def test_streaming_over_tls(env: Env) -> None:
    stream = env.stack.client().chat.completions.create(
        model="tls-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from upstream Hello from "
    row = env.stack.last_row(env.tls)
    assert row["status"] == 200 and row["completion_tokens"] == 5


def test_an_untrusted_certificate_is_a_502_naming_certificate_verification(env: Env) -> None:
    error = _refused(env, "untrusted-model")
    assert error["code"] == "upstream_unreachable"
    assert "certificate verification failed" in error["message"]
    rt = env.stack.gateway.app.runtime
    assert rt is not None
    assert rt.pool.by_name["untrusted"].last_error == "TLS certificate verification failed"


def test_the_hostname_is_checked_not_only_the_signature(env: Env) -> None:
    # Same server, trusted CA, but reached as 127.0.0.1: the certificate names localhost.
    error = _refused(env, "ip-model")
    assert "certificate verification failed" in error["message"]


def test_verify_false_connects_and_is_warned_about_at_start(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    assert _chat(env.stack.client(), "insecure-model") == "Hello from upstream"
    with caplog.at_level(logging.WARNING, logger="tollway.upstreams"):
        warn_unverified(read_config(env.stack.config).upstreams)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "TLS VERIFICATION IS OFF for upstream insecure" in warnings[0]
    assert env.tls.api_key not in warnings[0]


def test_https_through_a_connect_proxy_with_credentials(env: Env) -> None:
    proxy = env.proxy
    tunnels, handshakes = len(proxy.tunnels), env.handshakes.count
    client = env.stack.client()
    for _ in range(3):
        assert _chat(client, "proxied-model") == "Hello from upstream"
    stream = client.chat.completions.create(
        model="proxied-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    # One tunnel, one TLS handshake inside it (SNI and certificate of the upstream host).
    assert proxy.tunnels[tunnels:] == [f"localhost:{env.tls.port}".encode()]
    assert env.handshakes.count - handshakes == 1
    assert proxy.auth_seen[-1] == proxy.expected
    # The proxy's credentials go to the proxy only (inside the tunnel nobody sees them).
    assert "Proxy-Authorization" not in env.tls.seen[-1].headers


def test_a_proxy_refusing_the_credentials_is_a_502_without_the_password(env: Env) -> None:
    refused = env.proxy.refused
    error = _refused(env, "bad-proxy-model")
    assert error["code"] == "upstream_unreachable"
    assert "egress proxy" in error["message"]
    assert env.proxy.refused == refused + 1
    rt = env.stack.gateway.app.runtime
    assert rt is not None
    assert rt.pool.by_name["bad-proxy"].last_error == "egress proxy failed"


def test_plain_http_through_the_proxy_uses_absolute_form(env: Env) -> None:
    proxy = env.proxy
    connections, plain = proxy.connections, len(proxy.plain)
    client = env.stack.client()
    for _ in range(3):
        assert _chat(client, "plain-proxied-model") == "Hello from upstream"
    url = f"http://127.0.0.1:{env.plain.port}/v1/chat/completions"
    assert proxy.plain[plain:] == [f"POST {url} HTTP/1.1".encode()]
    assert proxy.connections - connections == 1  # kept alive through the proxy
    assert proxy.auth_seen[-1] == proxy.expected
    assert env.plain.seen[-1].path == "/v1/chat/completions"
