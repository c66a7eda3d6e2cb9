"""`/metrics` in one process: values after known traffic (requests by status and error class,
tokens and cost against the usage rows, latency and TTFT counts, limit refusals, refused keys,
upstream gauges), bounded model labels, and the token that protects it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from .fixtures_gateway import Stack, make_key
from .metrics_support import TOKEN, label_values, scrape, value

PRICES = {"gpt-test": {"input": 1.0, "output": 2.0}}
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def mstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("metrics"), metrics_token=TOKEN, config_extra={"prices": PRICES}
    )
    yield s
    s.stop()


def test_metrics_after_known_traffic(mstack: Stack) -> None:
    s = mstack
    client = s.client()
    for _ in range(3):
        client.chat.completions.create(model="gpt-test", messages=MSG)
    for _ in range(2):
        for _chunk in client.chat.completions.create(model="gpt-test", messages=MSG, stream=True):
            pass
    with pytest.raises(openai.NotFoundError):  # a model nobody serves: labelled "other"
        client.chat.completions.create(model="no-such-model-4f1c9e", messages=MSG)
    limited = s.client(make_key(s.db_url, rpm=1))
    limited.chat.completions.create(model="shared-model", messages=MSG)
    with pytest.raises(openai.RateLimitError):
        limited.chat.completions.create(model="shared-model", messages=MSG)
    for _ in range(2):
        with pytest.raises(openai.AuthenticationError):
            s.client("tw-not-a-real-key-0000000000").models.list()

    text = scrape(s.url)
    ok = {"status_class": "2xx", "error_class": "none"}
    assert value(text, "tollway_requests_total", model="gpt-test", upstream="a", **ok) == 5
    assert value(text, "tollway_requests_total", model="shared-model", **ok) == 1
    assert (
        value(
            text,
            "tollway_requests_total",
            model="other",
            upstream="none",
            status_class="4xx",
            error_class="client",
        )
        == 1
    )
    assert value(text, "tollway_requests_total") == 8
    assert value(text, "tollway_request_errors_total", error_type="model_not_found") == 1
    assert value(text, "tollway_limit_refusals_total", reason="rate_limit_exceeded") == 1
    assert value(text, "tollway_unauthenticated_refusals_total", code="invalid_api_key") == 2
    assert value(text, "tollway_request_duration_seconds_count", model="gpt-test") == 5
    assert value(text, "tollway_time_to_first_token_seconds_count", model="gpt-test") == 2
    # the client's unknown model name never becomes a label
    assert "no-such-model-4f1c9e" not in text
    assert label_values(text, "tollway_requests_total", "model") <= {
        "gpt-test",
        "shared-model",
        "alias-model",
        "other-model",
        "other",
        "none",
    }

    rows = s.usage_rows(8)
    assert len(rows) == 8
    gpt = [r for r in rows if r["model"] == "gpt-test"]
    assert value(text, "tollway_tokens_total", model="gpt-test", kind="input") == sum(
        r["prompt_tokens"] for r in gpt
    )
    assert value(text, "tollway_tokens_total", model="gpt-test", kind="output") == sum(
        r["completion_tokens"] for r in gpt
    )
    cost = sum(r["cost_usd"] for r in gpt)
    assert cost > 0
    assert value(text, "tollway_cost_usd_total", model="gpt-test") == pytest.approx(cost)
    print(f"\nmetrics: 8 requests, cost {cost:.8f} USD, tokens match the usage rows")

    # pool and sink gauges, read at the scrape
    assert value(text, "tollway_upstream_up", upstream="a") == 1
    assert value(text, "tollway_upstream_in_flight", upstream="a") == 0
    assert value(text, "tollway_upstream_attempts_total", upstream="a") == len(s.a.seen)
    assert value(text, "tollway_usage_spool_healthy") == 1
    text = scrape(s.url)  # the rows are in the database now: the writes were counted
    assert value(text, "tollway_usage_write_seconds_count", outcome="ok") >= 1
    assert value(text, "tollway_usage_written_total") == 8
    assert value(text, "tollway_usage_queue_depth") == 0


def test_metrics_need_the_token(mstack: Stack) -> None:
    url = mstack.url + "/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = httpx.get(url, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_metrics_token"
        assert TOKEN not in answer.text


def test_metrics_are_off_without_a_token(stack: Stack) -> None:
    answer = httpx.get(stack.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 404


def test_nothing_is_imported_when_everything_is_off(tmp_path: Path) -> None:
    """Zero cost when off: no prometheus_client, no opentelemetry, no listener thread."""
    script = (
        "import sys, threading\n"
        "from tollway.core.settings import Settings\n"
        "from tollway.gateway.usage import UsageSink\n"
        "from tollway.observe import Observability\n"
        "from tollway.upstreams.pool import Pool\n"
        "async def w(events): pass\n"
        "sink = UsageSink(w)\n"
        "Observability(Settings(), Pool(), sink, dict)\n"
        "mods = [m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))]\n"
        "print(mods, sink.observers, threading.active_count())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLWAY_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] [] 1"


def test_the_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    """deploy/grafana/tollway-dashboard.json (the compose file's Grafana loads it): every
    series a panel queries is one Tollway exports, and every metric has a panel."""
    import json
    import re

    from tollway.gateway.usage import UsageSink
    from tollway.observe.metrics import Metrics
    from tollway.upstreams.pool import Pool
    from tollway.upstreams.target import Upstream

    async def never(events: object) -> None:
        pass

    pool = Pool([Upstream("u", "http://127.0.0.1:9/v1", "k", frozenset({"m"}))])
    metrics = Metrics(pool, UsageSink(never))
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    exported = {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in suffixes[family.type]
    }
    path = Path(__file__).parent.parent / "deploy" / "grafana" / "tollway-dashboard.json"
    dashboard = json.loads(path.read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\btollway_[a-z_]+", target["expr"]))
    assert used, "no queries found"
    assert used <= exported, used - exported
    families = {family.name for family in metrics.registry.collect()}
    unused = {f for f in families if not any(u.startswith(f) for u in used)}
    assert not unused, unused
