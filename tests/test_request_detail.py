"""One request in full: timing marks, failed attempts, the upstream's error message (its key
masked), search by request id, filtered totals and key names in the CSV, through the admin
API and the CLI (remote and local), against a real Tollway and fake upstreams."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tollway.core.settings import get_settings

from .fixtures_gateway import Stack, make_key

SECRET = "detail-admin-secret-0123456789abcd"
runner = CliRunner()


@pytest.fixture(scope="module")
def det(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("detail"), admin_secret=SECRET)
    yield s
    s.stop()


@pytest.fixture
def fresh_det(det: Stack) -> Stack:
    det.reset()
    return det


def api(stack: Stack, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{stack.url}/admin/api{path}",
        params=params,
        headers={"Authorization": f"Bearer {SECRET}"},
    )


def chat(stack: Stack, model: str, text: str = "hi", key: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {key or stack.key}"},
        timeout=10,
    )


def cli(*args: str, code: int = 0) -> str:
    from tollway.cli.main import app

    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
    return result.stdout + result.stderr


def test_failed_attempts_and_the_error_message_are_recorded(fresh_det: Stack) -> None:
    stack = fresh_det
    stack.a.behaviour.mode = stack.b.behaviour.mode = "error"  # both answer 500
    answer = chat(stack, "shared-model")
    assert answer.status_code == 500
    rid = answer.headers["x-request-id"]
    stack.row(rid)
    detail = api(stack, f"/usage/records/{rid}").json()
    assert detail["status"] == 500 and detail["error_message"] == "upstream exploded"
    # The first upstream failed, the second one's answer passed through to the client.
    (failed,) = detail["failed_attempts"]
    assert failed["outcome"] == "HTTP 500" and failed["model"] == "shared-model"
    assert {failed["upstream"], detail["upstream"]} == {"a", "b"}
    assert detail["attempts"] == 2 and detail["key_name"] == "test"
    assert detail["fallback_from"] is None and detail["model"] == "shared-model"
    assert detail["admitted_ms"] is not None and detail["first_byte_ms"] is not None


def test_nothing_answered_lists_every_attempt(fresh_det: Stack) -> None:
    stack = fresh_det
    stack.a.behaviour.mode = stack.b.behaviour.mode = "no_credit"
    answer = chat(stack, "shared-model")
    assert answer.status_code == 503
    rid = answer.headers["x-request-id"]
    stack.row(rid)
    detail = api(stack, f"/usage/records/{rid}").json()
    outcomes = sorted((a["upstream"], a["outcome"]) for a in detail["failed_attempts"])
    assert outcomes == [("a", "HTTP 429 out of credit"), ("b", "HTTP 429 out of credit")]
    assert detail["error_type"] == "upstream_out_of_credit"
    assert detail["error_message"] == "Every upstream account for this model is out of credit."
    assert detail["upstream"] is None and detail["first_byte_ms"] is None


def test_success_has_ordered_timing_and_no_failures(fresh_det: Stack) -> None:
    answer = chat(fresh_det, "gpt-test")
    assert answer.status_code == 200
    rid = answer.headers["x-request-id"]
    fresh_det.row(rid)
    d = api(fresh_det, f"/usage/records/{rid}").json()
    assert d["failed_attempts"] == [] and d["error_message"] is None and d["upstream"] == "a"
    assert 0 < d["admitted_ms"] <= d["first_byte_ms"] <= d["latency_ms"]
    assert d["total_tokens"] and d["attempts"] == 1


def test_the_upstream_key_never_reaches_the_stored_message(fresh_det: Stack) -> None:
    stack = fresh_det
    leak = {"error": {"message": f"bad input for key {stack.a.api_key} here", "type": "x"}}
    stack.a.scripted[b"LEAKME"] = (400, leak)
    answer = chat(stack, "gpt-test", "LEAKME")
    assert answer.status_code == 400
    rid = answer.headers["x-request-id"]
    row = stack.row(rid)
    assert row["error_message"] == "bad input for key *** here"
    assert stack.a.api_key not in json.dumps(api(stack, f"/usage/records/{rid}").json())


def test_long_messages_are_bounded_and_cleaned(fresh_det: Stack) -> None:
    stack = fresh_det
    stack.a.scripted[b"LONGONE"] = (400, {"error": {"message": "x\x00y" + "z" * 2000}})
    rid = chat(stack, "gpt-test", "LONGONE").headers["x-request-id"]
    message = stack.row(rid)["error_message"]
    assert len(message) == 500 and message.startswith("x\ufffdy")


def test_search_by_request_id_and_filtered_totals(fresh_det: Stack) -> None:
    stack = fresh_det
    ok = [chat(stack, "gpt-test").headers["x-request-id"] for _ in range(3)]
    stack.a.behaviour.mode = "error"
    bad = chat(stack, "gpt-test").headers["x-request-id"]
    stack.row(bad)
    for rid in ok:
        stack.row(rid)
    page = api(stack, "/usage/records", request_id=ok[1]).json()
    assert [r["request_id"] for r in page["items"]] == [ok[1]]
    one = api(stack, "/usage/records/totals", request_id=ok[1]).json()
    assert one["requests"] == 1 and one["errors"] == 0
    assert one["total_tokens"] == page["items"][0]["total_tokens"]
    # Totals agree with the list they sum, whichever way they are computed.
    everything = api(stack, "/usage/records", limit=1000).json()["items"]
    errors = [r for r in everything if r["status"] >= 400]
    raw = api(stack, "/usage/records/totals", status="error").json()
    assert raw["requests"] == len(errors) and raw["errors"] == len(errors)
    rolled = api(stack, "/usage/records/totals").json()  # no status: from the rollups
    assert rolled["requests"] == len(everything)
    assert rolled["total_tokens"] == sum(r["total_tokens"] or 0 for r in everything)
    assert api(stack, "/usage/records/totals", status="nope").status_code == 422
    assert api(stack, "/usage/records/req_missing").status_code == 404


def test_csv_names_each_rows_key(fresh_det: Stack) -> None:
    stack = fresh_det
    other = make_key(stack.db_url, name="=cmd|' /C calc'!A0")  # a formula-looking name
    rid = chat(stack, "gpt-test", key=other).headers["x-request-id"]
    stack.row(rid)
    text = api(stack, "/usage/export.csv", request_id=rid).text
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["request_id"] == rid and row["key_name"] == "'=cmd|' /C calc'!A0"
    assert list(row)[3:5] == ["key_id", "key_name"]


@pytest.fixture
def cli_env(det: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", det.db_url)
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    monkeypatch.delenv("TOLLWAY_ADMIN_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_shows_one_request_locally_and_remotely(fresh_det: Stack, cli_env: None) -> None:
    stack = fresh_det
    stack.a.behaviour.mode = stack.b.behaviour.mode = "error"
    rid = chat(stack, "shared-model").headers["x-request-id"]
    stack.row(rid)
    remote = ["--url", stack.url, "--admin-secret", SECRET]
    local_text = cli("usage", "show", rid)
    remote_text = cli("usage", "show", rid, *remote)
    assert local_text == remote_text
    assert "upstream exploded" in local_text and "Failed attempts" in local_text
    assert "HTTP 500" in local_text and "Limits admitted" in local_text
    data = json.loads(cli("usage", "show", rid, "--json", *remote))
    assert data["request_id"] == rid and len(data["failed_attempts"]) == 1
    missing = cli("usage", "show", "req_nothing", *remote, code=1)
    assert "no request with id req_nothing" in missing
    assert "Requests:" in cli("usage", "--last", "1h")  # the report still works


def test_failed_attempts_are_bounded_when_stored() -> None:
    from tollway.core.types import UsageEvent
    from tollway.store.usage_clean import clean

    many: list[list[str | None]] = [["up", "m\x00", "HTTP 500"]] * 15
    ev = UsageEvent(0.0, "r", None, "POST", "/v1/x", failures=many)
    cleaned = clean(ev).failures
    assert (
        cleaned is not None and len(cleaned) == 10 and cleaned[0] == ["up", "m\ufffd", "HTTP 500"]
    )
