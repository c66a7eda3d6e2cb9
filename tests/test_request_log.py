"""The request log: one line per request from a real `tollway serve` (JSON), parsed and checked
for its fields, its levels, and for the absence of every secret, prompt and answer used; the
text format's quoting; the level setting."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from tollway.core.types import UsageEvent
from tollway.observe.request_log import RequestLog, text_line
from tollway.store.db import migrate_sync

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, write_config
from .metrics_support import TOKEN
from .servers import GatewayProcess

PROMPT = "PROMPT-SECRET-7d3a the user's private question"
ANSWER = "ANSWER-SECRET-91b2 private reply"
ADMIN = "admin-SECRET-5c2e1f0a9b8d7c6e5f4a"
SERVER = "server-SECRET-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
INVALID = "tw-INVALID-SECRET-00000000000000000000"
FIELDS = {
    "ts", "level", "logger", "request_id", "key_id", "method", "endpoint", "model", "upstream",
    "status", "stream", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd",
    "latency_ms", "ttft_ms", "attempts", "error_type",
}  # fmt: skip


def test_one_json_line_per_request_and_no_secret(tmp_path: Path) -> None:
    upstream = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    upstream.behaviour.reply = ANSWER
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}"
    config = write_config(
        tmp_path / "tollway.yaml",
        [{"name": "a", "base_url": upstream.base_url, "api_key": upstream.api_key,
          "models": ["gpt-test"]}],
    )  # fmt: skip
    migrate_sync(db_url)
    key = make_key(db_url)
    env = {
        "TOLLWAY_DATABASE_URL": db_url,
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_REQUEST_LOG": "true",
        "TOLLWAY_LOG_FORMAT": "json",
        "TOLLWAY_LOG_LEVEL": "info",
        "TOLLWAY_ADMIN_SECRET": ADMIN,
        "TOLLWAY_SECRET_KEY": SERVER,
        "TOLLWAY_METRICS_TOKEN": TOKEN,
    }
    proc = GatewayProcess(env, tmp_path)
    auth = {"Authorization": f"Bearer {key}"}
    messages = [{"role": "user", "content": PROMPT}]
    ids: list[str] = []
    try:
        proc.start()
        url = proc.url + "/v1/chat/completions"
        for body in (
            {"model": "gpt-test", "messages": messages},
            {"model": "gpt-test", "messages": messages, "stream": True},
            {"model": "no-such-model", "messages": messages},
        ):
            answer = httpx.post(url, json=body, headers=auth)
            ids.append(answer.headers["x-request-id"])
        upstream.behaviour.mode = "error"  # a 500 from the only upstream
        answer = httpx.post(url, json={"model": "gpt-test", "messages": messages}, headers=auth)
        assert answer.status_code == 500
        ids.append(answer.headers["x-request-id"])
        httpx.post(url, json={"model": "gpt-test"}, headers={"Authorization": f"Bearer {INVALID}"})
        httpx.get(proc.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        httpx.get(proc.url + "/admin/api/keys", headers={"Authorization": f"Bearer {ADMIN}"})
    finally:
        proc.stop()
        upstream.stop()

    output = proc.log.read_text()
    for secret in (key, upstream.api_key, ADMIN, SERVER, TOKEN, INVALID, PROMPT, ANSWER, "7d3a"):
        assert secret not in output, f"{secret[:12]}... appears in the log"
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # all JSON
    requests = [line for line in lines if line["logger"] == "tollway.requests"]
    assert [r["request_id"] for r in requests] == ids
    for r in requests:
        assert set(r) >= FIELDS
        assert r["key_id"] == 1 and r["endpoint"] == "/v1/chat/completions"
    ok, stream, unknown, failed = requests
    assert (ok["level"], ok["status"], ok["upstream"], ok["error_type"]) == ("info", 200, "a", None)
    assert (ok["prompt_tokens"], ok["completion_tokens"]) == (11, len(ANSWER.split()))
    assert ok["latency_ms"] > 0
    assert stream["stream"] is True and stream["ttft_ms"] is not None
    assert (unknown["level"], unknown["status"], unknown["error_type"]) == (
        "warning",
        404,
        "model_not_found",
    )
    assert (failed["level"], failed["status"], failed["error_type"]) == (
        "error",
        500,
        "upstream_error",
    )
    print(f"\nrequest log: {len(requests)} lines of {len(lines)}, no secret, no prompt")


def _event(**kw: object) -> UsageEvent:
    base: dict[str, object] = {"ts": time.time(), "request_id": "r1", "key_id": 3}
    base.update(method="POST", endpoint="/v1/chat/completions", status=200, latency_ms=1.5)
    base.update(kw)
    return UsageEvent(**base)  # type: ignore[arg-type]


def test_text_lines_cannot_be_forged_by_a_model_name() -> None:
    line = text_line(_event(model='x\nFAKE status=200 "q" a=b'), logging.INFO)
    assert "\n" not in line
    assert ' model="x\\nFAKE status=200 \\"q\\" a=b" ' in line
    assert " status=200 " in line and "request_id=r1" in line and "error_type=-" in line
    plain = text_line(_event(model="gpt-test", upstream="a", prompt_tokens=5), logging.INFO)
    assert " model=gpt-test upstream=a status=200 " in plain and "prompt_tokens=5" in plain


def test_level_setting_keeps_only_failed_requests() -> None:
    stream = io.StringIO()
    log = RequestLog("text", "warning", stream)
    log.observe([_event(request_id="ok1"), _event(request_id="bad1", status=404,
                                                  error_type="model_not_found")])  # fmt: skip
    log.observe([_event(request_id="up1", status=502, error_type="upstream_unreachable")])
    log.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "request_id=bad1" in lines[0] and " WARNING " in lines[0]
    assert "request_id=up1" in lines[1] and " ERROR " in lines[1]


def test_remembered_heads_stay_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    from tollway.observe import request_log

    monkeypatch.setattr(request_log, "MAX_HEADS", 2)
    monkeypatch.setattr(request_log, "_HEADS", {})
    for i in range(5):  # each new combination past the bound starts the memory afresh
        line = text_line(_event(model=f"m{i}", key_id=i), logging.INFO)
        assert f" key_id={i} " in line and f" model=m{i} upstream=- " in line
        assert len(request_log._HEADS) <= 2
    again = text_line(_event(model="m4", key_id=4, ttft_ms=None), logging.INFO)
    assert " model=m4 " in again and "ttft_ms=-" in again and "latency_ms=1.500" in again
