"""Key badges, spend against budget and limits left (admin API and CLI against a running
Tollway), and the prices API and CLI with the bundled table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from tollway.core.fmt import usd, usd_total

from .fixtures_gateway import Stack

SECRET = "key-standing-admin-secret-0123456789"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
# The fake upstream bills 11 prompt tokens a request: $0.0265 each, so two spend $0.053.
INPUT_RATE = 0.0265 / 11 * 1_000_000
runner = CliRunner()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("standing"), admin_secret=SecretStr(SECRET))
    yield s
    s.stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url + "/admin/api", headers={"Authorization": f"Bearer {SECRET}"}
    ) as client:
        yield client


def cli(stack: Stack, *args: str) -> str:
    from tollway.cli.main import app

    result = runner.invoke(app, [*args, "--url", stack.url, "--admin-secret", SECRET])
    assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
    return result.stdout


def new_key(api: httpx.Client, **fields: Any) -> tuple[int, str]:
    resp = api.post("/keys", json={"name": f"k{time.monotonic_ns()}", **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()["info"]["id"], resp.json()["key"]


def settled(api: httpx.Client, key_id: int, badge: str, requests: int = 0) -> dict[str, Any]:
    """The key's JSON once its summary shows `badge` and at least `requests` requests today
    (usage rows are written asynchronously)."""
    deadline = time.monotonic() + 10
    while True:
        info: dict[str, Any] = api.get(f"/keys/{key_id}").json()
        summary = info["summary"]
        done = summary["badge"] == badge and summary["requests_today"] >= requests
        if done or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


def spend_past_budget(stack: Stack, api: httpx.Client) -> tuple[int, int]:
    """The issue's key: $0.053 spent of a $0.05 monthly budget. Returns (id, refusals)."""
    resp = api.post(
        "/prices", json={"model": "gpt-test", "input_per_mtok": INPUT_RATE, "output_per_mtok": 0}
    )
    assert resp.status_code == 200, resp.text
    key_id, key = new_key(api, budget_usd=0.05, budget_period="monthly")
    client = stack.client(key=key)
    client.chat.completions.create(**CHAT)  # $0.0265: under budget, admitted
    client.chat.completions.create(**CHAT)  # admitted at $0.0265 spent, ends at $0.053
    refused = 0
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**CHAT)
        assert caught.value.code == "insufficient_quota"
        refused += 1
    return key_id, refused


def test_budget_exhausted_key_is_exhausted_in_api_and_cli(stack: Stack, api: httpx.Client) -> None:
    key_id, refused = spend_past_budget(stack, api)
    info = settled(api, key_id, "exhausted", requests=2 + refused)
    s = info["summary"]
    assert info["status"] == "active"  # enabled and not expired: the badge says the rest
    assert s["badge"] == "exhausted"
    assert s["spent_usd"] == pytest.approx(0.053)
    assert s["budget_left_usd"] == 0
    assert s["requests_today"] == 2 + refused
    assert s["reasons"][0].startswith("budget spent: $0.053 of $0.05 (this month), resets ")
    listed = api.get("/keys").json()["items"]
    assert next(k for k in listed if k["id"] == key_id)["summary"]["badge"] == "exhausted"

    table = cli(stack, "list-keys")
    line = next(line for line in table.splitlines() if line.strip().startswith(str(key_id)))
    assert "exhausted" in line and "$0.053 / $0.05" in line
    stats = cli(stack, "key-stats", str(key_id))
    assert "exhausted" in stats.splitlines()[0]
    assert "budget spent: $0.053 of $0.05" in stats
    budget_row = next(line for line in stats.splitlines() if "Budget (monthly)" in line)
    assert budget_row.split()[2:] == ["$0.05", "$0.053", "$0.00"]  # allowed, used, left
    assert "Requests today (UTC): 4" in stats


def test_a_key_refused_by_its_rate_limit_is_limited(stack: Stack, api: httpx.Client) -> None:
    key_id, key = new_key(api, rpm=1, tpm=1_000_000)
    client = stack.client(key=key)
    client.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(**CHAT)
    assert caught.value.code == "rate_limit_exceeded"
    s = settled(api, key_id, "limited")["summary"]
    assert s["badge"] == "limited"
    assert s["reasons"] == ["requests per minute full: 1 of 1"]
    assert (s["requests_last_minute"], s["tokens_last_minute"]) == (1, 14)
    stats = cli(stack, "key-stats", str(key_id))
    rpm_row = next(line for line in stats.splitlines() if "Requests per minute" in line)
    assert rpm_row.split()[-3:] == ["1", "1", "0"]
    tpm_row = next(line for line in stats.splitlines() if "Tokens per minute" in line)
    assert tpm_row.split()[-3:] == ["1,000,000", "14", "999,986"]


def test_a_key_past_its_token_quota_is_exhausted(stack: Stack, api: httpx.Client) -> None:
    key_id, key = new_key(api, token_quota=10)
    stack.client(key=key).chat.completions.create(**CHAT)  # 14 tokens: admitted, then over
    s = settled(api, key_id, "exhausted")["summary"]
    assert (s["badge"], s["tokens_used"], s["tokens_left"]) == ("exhausted", 14, 0)
    assert s["reasons"] == ["token quota used: 14 of 10 tokens"]


def test_active_disabled_and_expired_badges(stack: Stack, api: httpx.Client) -> None:
    key_id, _ = new_key(api, budget_usd=10.0)
    s = api.get(f"/keys/{key_id}").json()["summary"]
    assert (s["badge"], s["reasons"], s["spent_usd"], s["budget_left_usd"]) == (
        "active",
        [],
        0,
        10.0,
    )
    assert api.post(f"/keys/{key_id}/disable").json()["summary"]["badge"] == "disabled"
    expired, _ = new_key(api, expires_at="2020-01-01T00:00:00Z")
    assert api.get(f"/keys/{expired}").json()["summary"]["badge"] == "expired"
    out = cli(stack, "list-keys")
    assert any(
        line.strip().startswith(str(expired)) and "expired" in line for line in out.splitlines()
    )


def test_prices_api_set_list_unset_and_import(stack: Stack, api: httpx.Client) -> None:
    model = "meta-llama/Test-Model-70B"
    resp = api.post("/prices", json={"model": model, "input_per_mtok": 0.5, "output_per_mtok": 1})
    assert resp.status_code == 200 and resp.json()["cached_input_per_mtok"] is None
    assert api.get(f"/prices/{model}").json()["input_per_mtok"] == 0.5
    assert model in [p["model"] for p in api.get("/prices").json()]
    bad = api.post("/prices", json={"model": "x", "input_per_mtok": -1, "output_per_mtok": 1})
    assert bad.status_code == 422 and bad.json()["error"]["message"]

    bundled = api.get("/prices/bundled").json()
    assert bundled["as_of"] and "pricing" in bundled["source"]
    by_model = {p["model"]: p for p in bundled["prices"]}
    assert by_model["gpt-4o-mini"]["input_per_mtok"] == 0.15
    api.post("/prices", json={"model": "gpt-4o", "input_per_mtok": 1, "output_per_mtok": 2})
    result = api.post("/prices/import", json={"bundled": True}).json()
    assert "gpt-4o" in result["kept"] and "gpt-4o-mini" in result["added"]
    assert result["as_of"] == bundled["as_of"]
    assert api.get("/prices/gpt-4o").json()["input_per_mtok"] == 1  # kept: ours wins
    again = api.post("/prices/import", json={"bundled": True, "overwrite": True}).json()
    assert "gpt-4o" in again["replaced"] and not again["added"]
    assert api.get("/prices/gpt-4o").json()["input_per_mtok"] == 2.5
    own = {"table": {"prices": [{"model": "mine", "input_per_mtok": 3, "output_per_mtok": 4}]}}
    assert api.post("/prices/import", json=own).json()["added"] == ["mine"]
    both = api.post("/prices/import", json={"bundled": True, **own})
    assert both.status_code == 422

    assert api.delete(f"/prices/{model}").status_code == 204
    missing = api.get(f"/prices/{model}")
    assert missing.status_code == 404 and missing.json()["error"]["message"]


def test_a_price_set_by_the_api_prices_the_next_request(stack: Stack, api: httpx.Client) -> None:
    api.post("/prices", json={"model": "other-model", "input_per_mtok": 1, "output_per_mtok": 1})
    done = stack.client().chat.completions.with_raw_response.create(
        model="other-model", messages=CHAT["messages"]
    )
    row = stack.row(done.headers["x-request-id"])
    assert row["cost_usd"] == pytest.approx(14 / 1_000_000)
    api.delete("/prices/other-model")
    done = stack.client().chat.completions.with_raw_response.create(
        model="other-model", messages=CHAT["messages"]
    )
    assert stack.row(done.headers["x-request-id"])["cost_usd"] is None  # unknown, not 0


def test_prices_cli(stack: Stack) -> None:
    out = cli(stack, "prices", "set", "cli-model", "--input", "0.15", "--output", "0.6")
    assert out.strip() == "cli-model: input $0.15, output $0.60 per million tokens"
    listed = cli(stack, "prices", "list")
    row = next(line for line in listed.splitlines() if "cli-model" in line)
    assert row.split()[:4] == ["cli-model", "$0.15", "—", "$0.60"]
    imported = cli(stack, "prices", "import", "--bundled")
    assert "Bundled list prices as of 2025-08-15" in imported and "kept as they were" in imported
    assert cli(stack, "prices", "unset", "cli-model").startswith("cli-model: price removed")
    assert "cli-model" not in cli(stack, "prices", "list")
    from tollway.cli.main import app

    missing = runner.invoke(
        app, ["prices", "unset", "cli-model", "--url", stack.url, "--admin-secret", SECRET]
    )
    assert missing.exit_code == 1 and "no price for model 'cli-model'" in missing.stderr


def test_usage_report_skips_empty_hours_and_groups_thousands(stack: Stack) -> None:
    out = cli(stack, "usage", "--bucket", "hour")
    series = out[out.index("By hour") :].split("Top keys")[0]
    rows = [line for line in series.splitlines() if line.strip()[:4].isdigit()]
    assert len(rows) in (1, 2)  # this test's requests span one hour, or two across its edge
    assert all(" 0 " not in f" {line.split()[2]} " for line in rows)  # no empty bucket


def test_money_and_unknown_formats() -> None:
    assert [usd(v) for v in (0.00012, 2.0000000000000002e-07, 0.053, 0.05, 1234.5)] == [
        "$0.00012",
        "$0.0000002",
        "$0.053",
        "$0.05",
        "$1,234.50",
    ]
    assert usd(None) == "—"
    assert usd_total(0.0, 12) == "—"  # 12 requests, none priced: unknown, not $0.00
    assert usd_total(0.0, 0) == "$0.00"
