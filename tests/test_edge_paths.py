"""Finding 4: a path with a dot segment, however written, never reaches an upstream: 400
`invalid_path` before the key is even looked up."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from tollway.gateway.paths import has_dot_segment

from .fixtures_gateway import Stack

DOTTED = [
    "/v1/internal/../../anything",
    "/v1/chat/completions/..",
    "/v1/./chat/completions",
    "/v1/files/%2e%2e/%2E%2E/admin",
    "/v1/files/.%2e/x",
    "/v1/files/%2e./x",
    "/v1/files/..%2fadmin",
    "/v1/files/..%2Fadmin",
    "/v1/files/..%5cadmin",
    "/v1/files/..\\admin",
    "/v1/files/%252e%252e/admin",
    "/v1/files/..;/admin",
    "/v1/files/x/...",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("paths"))
    yield s
    s.stop()


def _raw(stack: Stack, method: str, path: str, key: str) -> tuple[int, bytes]:
    """Sent byte for byte (http.client does not normalise the path, as a browser would)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway.settings.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {key}")
        body = b'{"model": "gpt-test"}' if method == "POST" else b""
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", DOTTED)
def test_dot_segments_are_refused_before_auth_and_upstream(stack: Stack, path: str) -> None:
    stack.reset()
    for method in ("POST", "GET"):
        # A key that does not exist: a 401 would mean auth (and its database read) ran first.
        status, body = _raw(stack, method, path, "sk-not-a-key")
        assert status == 400, (path, body)
        error = json.loads(body)["error"]
        assert error["code"] == "invalid_path" and error["type"] == "invalid_request_error"
        status, body = _raw(stack, method, path, stack.key)
        assert status == 400, (path, body)
    assert stack.a.seen == [] and stack.b.seen == []


def test_paths_with_dots_inside_names_still_pass(stack: Stack) -> None:
    stack.reset()
    status, _ = _raw(stack, "POST", "/v1/chat/completions?x=../..", stack.key)
    assert status == 200
    status, _ = _raw(stack, "POST", "/v1/files/file-1.2.jsonl/content", stack.key)
    assert status != 400  # reaches the upstream (which answers as it likes)
    assert [s.path for s in stack.a.seen] == [
        "/v1/chat/completions",
        "/v1/files/file-1.2.jsonl/content",
    ]


def test_has_dot_segment_cases() -> None:
    for path in DOTTED:
        assert has_dot_segment(path.encode()), path
    for path in ("/v1/models/gpt-4.1", "/v1/files/a..b", "/v1/x/.hidden", "/v1/%41bc", "/v1/a%2fb"):
        assert not has_dot_segment(path.encode()), path
