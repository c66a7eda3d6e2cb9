"""Behind a TLS proxy: forwarded headers honoured only from TOLLWAY_FORWARDED_ALLOW_IPS, so the
cookie is Secure when the proxy says https and the admin-secret throttle (UI login and admin
API) keys on the real client. `tollway serve` as a child process, as deployed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tollway.core.throttle import MAX_FAILURES, FailureThrottle

from .admin_http import login, page_status, set_cookie
from .fixtures_gateway import Stack
from .servers import GatewayProcess

SECRET = "proxy-test-admin-secret-0123456789"


def _env(tmp: Path, allow: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    return {
        **env,
        "TOLLWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'proxy.db'}",
        "TOLLWAY_ADMIN_SECRET": SECRET,
        "TOLLWAY_FORWARDED_ALLOW_IPS": allow,
        "TOLLWAY_USAGE_WRITER": "inline",
    }


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Tollway that trusts its proxy at 127.0.0.1 (every test client connects from there)."""
    tmp = tmp_path_factory.mktemp("proxy")
    proc = GatewayProcess(_env(tmp, "127.0.0.1"), tmp).start()
    yield proc
    proc.stop()


def test_https_at_the_proxy_gives_a_secure_cookie(behind_proxy: GatewayProcess) -> None:
    answer, cookie = login(
        behind_proxy.url, SECRET, {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.1"}
    )
    assert answer.status_code == 303 and cookie
    assert set_cookie(answer)["tollway_session"]["secure"] is True
    for plain in ({"X-Forwarded-Proto": "http"}, {"Forwarded": "for=192.0.2.1;proto=https"}):
        answer, cookie = login(behind_proxy.url, SECRET, plain)  # RFC 7239 is not read
        assert cookie and not set_cookie(answer)["tollway_session"]["secure"]


def test_failed_logins_lock_out_only_the_forwarded_address(behind_proxy: GatewayProcess) -> None:
    guesser, operator = {"X-Forwarded-For": "203.0.113.5"}, {"X-Forwarded-For": "203.0.113.6"}
    for _ in range(MAX_FAILURES):
        assert login(behind_proxy.url, "wrong-secret", guesser)[0].status_code == 401
    answer, cookie = login(behind_proxy.url, SECRET, guesser)
    assert answer.status_code == 429 and cookie is None  # refused even with the right secret
    answer, cookie = login(behind_proxy.url, SECRET, operator)
    assert answer.status_code == 303 and cookie
    assert page_status(behind_proxy.url, cookie) == 200


def test_admin_api_failures_are_throttled_per_address(behind_proxy: GatewayProcess) -> None:
    url = behind_proxy.url + "/admin/api/keys"
    guesser = {"X-Forwarded-For": "198.51.100.7"}
    for i in range(MAX_FAILURES):
        answer = httpx.get(url, headers={**guesser, "Authorization": f"Bearer wrong-{i}"})
        assert answer.status_code == 401, answer.text
    for secret in ("wrong-again", SECRET):  # the secret is not even looked at
        answer = httpx.get(url, headers={**guesser, "Authorization": f"Bearer {secret}"})
        assert answer.status_code == 429, answer.text
        assert 0 < int(answer.headers["Retry-After"]) <= 300
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "admin_auth_throttled"
    other = {"X-Forwarded-For": "198.51.100.8", "Authorization": f"Bearer {SECRET}"}
    assert httpx.get(url, headers=other).status_code == 200


def test_forwarded_headers_from_an_untrusted_address_are_ignored(tmp_path: Path) -> None:
    """Nothing trusted (the default): the peer 127.0.0.1 is the client, http is http."""
    stack = Stack(tmp_path, admin_secret=SECRET)
    try:
        answer, cookie = login(stack.url, SECRET, {"X-Forwarded-Proto": "https"})
        assert cookie and not set_cookie(answer)["tollway_session"]["secure"]
        for i in range(MAX_FAILURES):
            spoofed = {"X-Forwarded-For": f"203.0.113.{i}"}
            assert login(stack.url, "wrong-secret", spoofed)[0].status_code == 401
        # Every guess counted against 127.0.0.1, whatever address each one claimed.
        answer, _ = login(stack.url, SECRET, {"X-Forwarded-For": "203.0.113.200"})
        assert answer.status_code == 429
        api = httpx.get(
            stack.url + "/admin/api/keys",
            headers={"Authorization": f"Bearer {SECRET}", "X-Forwarded-For": "192.0.2.9"},
        )
        assert api.status_code == 429
    finally:
        stack.stop()


def test_the_throttle_window_slides() -> None:
    now = [1000.0]
    throttle = FailureThrottle(max_failures=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("a") == 0
        throttle.fail("a")
        now[0] += 10
    assert throttle.retry_after("a") == 30  # the first failure leaves the window at 1060
    assert throttle.retry_after("b") == 0
    now[0] = 1060.0
    assert throttle.retry_after("a") == 0


def test_invalid_client_keys_are_throttled_per_forwarded_address(
    behind_proxy: GatewayProcess,
) -> None:
    """The gateway's invalid-key throttle (`/v1`) sees the real client behind a trusted proxy:
    one guessing address is refused, another address behind the same proxy is not."""
    url = behind_proxy.url + "/v1/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    def attempt(address: str, i: int) -> httpx.Response:
        headers = {"X-Forwarded-For": address, "Authorization": f"Bearer tw-guess-{address}-{i}"}
        return httpx.post(url, json=body, headers=headers)

    statuses = [attempt("203.0.113.77", i).status_code for i in range(25)]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}, statuses
    answer = attempt("203.0.113.78", 0)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
