"""Browser tests (Chromium, desktop and phone): upstream health as the pool sees it (per model,
Test results, new upstreams at once, every source labelled), session expiry (back to the page,
never a fragment; an interrupted edit filled back in), plain-word field errors, and the
playground's catalog (typed names, embedding models, two models side by side, bad keys)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
from playwright.sync_api import expect

from tollway.services import upstreams as upstream_service
from tollway.upstreams.crypto import secret_box

from .fake_upstream import FakeUpstream
from .fixtures_gateway import Stack, make_key
from .ui_fixtures import ADMIN_SECRET, PHONE, login, shoot

pytestmark = pytest.mark.browser
TTL = 3.0  # seconds a UI session lasts here, so a test can outlive one


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("ui-health"),
        admin_secret=ADMIN_SECRET,
        secret_key="ui-health-server-secret-0123456789",
        config_extra={"prices": {"gpt-test": {"input": 2.0, "output": 8.0}}},
    )
    yield s
    s.stop()


@pytest.fixture
def third() -> Iterator[FakeUpstream]:
    """An upstream for every model, whose /v1/models lists a chat and an embedding model."""
    fake = FakeUpstream("c", "sk-upstream-SECRET-cccc").start()
    fake.models = ["c-chat", "nomic-embed-text"]
    yield fake
    fake.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop_database_upstreams(stack: Stack) -> None:
    engine = stack.gateway.app.runtime.engine  # type: ignore[union-attr]
    for info in stack.gateway.call(upstream_service.list_upstreams(engine)):
        stack.gateway.call(upstream_service.delete_upstream(engine, info.id))
    stack.gateway.call(stack.gateway.app.runtime.upstreams.reload_db())  # type: ignore[union-attr]


def expire_session(page: Any, stack: Stack) -> None:
    """Waits (no clock to turn: the cookie's expiry is signed) until the session is over."""
    deadline = time.monotonic() + TTL + 10
    while page.request.get("/keys", max_redirects=0).status != 303:
        assert time.monotonic() < deadline, "the session never expired"
        time.sleep(0.2)


# --- upstreams ---------------------------------------------------------------------------------


def test_new_upstream_at_once_failed_test_marks_it_and_one_model_rests_alone(
    page: Any, ui_stack: Stack
) -> None:
    ui_stack.reset()
    drop_database_upstreams(ui_stack)
    login(page)
    page.goto("/upstreams")
    # Config-file upstreams are labelled with their source, read-only.
    expect(page.locator('tr[data-upstream="a"]')).to_contain_text("config file · read-only")
    page.get_by_role("link", name="Add upstream").click()
    page.get_by_label("Name").fill("closed")
    page.get_by_label("Base URL").fill(f"http://127.0.0.1:{closed_port()}/v1")
    page.get_by_label("Models").fill("closed-model")
    page.get_by_role("button", name="Add upstream").click()
    expect(page.get_by_role("status")).to_contain_text("Upstream added")
    # In the pool table at once: no Reload, no waiting for a poll.
    row = page.locator('tr[data-upstream="closed"]')
    expect(row).to_contain_text("database")
    expect(row.locator(".badge").first).to_have_text("healthy")  # nothing known yet
    row.get_by_role("button", name="Test closed").click()
    expect(row.locator(".test-result")).to_contain_text("unreachable")
    # The Test and the health agree: a closed port is not "healthy".
    expect(row.locator(".badge").first).to_have_text("cooldown")
    expect(row).to_contain_text("test: unreachable")

    # One model answering 500 rests on a, for that model only.
    ui_stack.a.scripted[b"shared-model"] = (500, {"error": {"message": "x", "type": "server"}})
    chat = ui_stack.client().chat.completions.create
    chat(model="shared-model", messages=[{"role": "user", "content": "hi"}])  # b answers
    chat(model="gpt-test", messages=[{"role": "user", "content": "hi"}])  # a still serves it
    page.get_by_role("button", name="Reload").click()
    a_row = page.locator('tr[data-upstream="a"]')
    expect(a_row.locator(".badge").first).to_have_text("healthy")
    expect(a_row).to_contain_text("shared-model: cooldown")
    shoot(page, "upstreams-health")

    # A passing Test clears "half open".
    rt = ui_stack.gateway.app.runtime
    assert rt is not None
    ui_stack.gateway.call(_fail_then_rest(rt.pool, "b"))
    page.get_by_role("button", name="Reload").click()
    b_row = page.locator('tr[data-upstream="b"]')
    expect(b_row.locator(".badge").first).to_have_text("half open")
    b_row.get_by_role("button", name="Test b").click()
    expect(b_row.locator(".test-result")).to_contain_text("HTTP 200")
    expect(b_row.locator(".badge").first).to_have_text("healthy")
    drop_database_upstreams(ui_stack)


async def _fail_then_rest(pool: Any, name: str) -> None:
    up = pool.by_name[name]
    pool.on_failure(up, reason="timeout")
    up.cooldown_until = 0.0  # its rest is over: half open, waiting for a trial


# --- sessions and forms ------------------------------------------------------------------------


@pytest.fixture
def short_sessions(ui_stack: Stack) -> Iterator[None]:
    ui_stack.gateway.settings.ui_session_ttl = TTL
    yield
    ui_stack.gateway.settings.ui_session_ttl = 12 * 3600


def test_expiry_during_the_overview_refresh_returns_to_the_page(
    page: Any, ui_stack: Stack, short_sessions: None
) -> None:
    login(page)
    ui_stack.gateway.settings.ui_session_ttl = 3600  # the next login lasts
    # The overview re-fetches /live every 5 s; the first fetch after expiry goes to login.
    page.wait_for_url(
        lambda url: url.endswith("/login?next=%2F&expired=1"), timeout=TTL * 1000 + 20_000
    )
    expect(page.locator("#session-expired")).to_contain_text("Your session expired")
    shoot(page, "login-session-expired")
    page.get_by_label("Admin secret").fill(ADMIN_SECRET)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: url.endswith("/") and "/live" not in url)
    expect(page.locator("h1")).to_have_count(1)
    assert "<html" in page.content() and page.locator("nav").count() >= 1  # a page, not a fragment


def test_expiry_mid_edit_says_why_and_keeps_the_values(
    page: Any, ui_stack: Stack, short_sessions: None
) -> None:
    make_key(ui_stack.db_url, name="Interrupted")
    login(page)
    page.goto("/keys?q=Interrupted")
    page.get_by_role("link", name="Edit Interrupted").click()
    edit_url = page.url
    page.get_by_label("Requests per minute").fill("77")
    page.get_by_label("Models allowed").fill("gpt-test, shared-model")
    expire_session(page, ui_stack)
    ui_stack.gateway.settings.ui_session_ttl = 3600
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(lambda url: "/login?next=" in url and url.endswith("&expired=1"))
    expect(page.locator("#session-expired")).to_contain_text("filled back in")
    draft = page.evaluate("JSON.parse(sessionStorage.getItem('tollway-draft'))")
    names = [name for name, _ in draft["values"]]
    assert "rpm" in names and "csrf" not in names  # the form's values, never its token
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "tollway_session"]
    assert cookie["expires"] > time.time() + 6 * 86400  # kept past expiry: "expired" is told
    page.get_by_label("Admin secret").fill(ADMIN_SECRET)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(edit_url)  # back on the edit page (?resumed=1 removed)
    expect(page.locator("#draft-restored")).to_contain_text("Your session expired")
    assert page.get_by_label("Requests per minute").input_value() == "77"
    assert page.get_by_label("Models allowed").input_value() == "gpt-test, shared-model"
    shoot(page, "key-edit-resumed")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Key saved.").wait_for()
    assert page.get_by_label("Requests per minute").input_value() == "77"


def test_field_errors_in_plain_words_and_unknown_models_warned(page: Any, ui_stack: Stack) -> None:
    login(page)
    page.goto("/keys/new")
    page.get_by_label("Name").fill("Careful")
    page.get_by_label("Requests per minute").fill("-5")
    page.get_by_label("Budget (USD)").fill("-1")
    page.get_by_label("Expires at (UTC)").fill("2020-01-01T00:00")
    with page.expect_response(lambda r: r.request.method == "POST") as resp:
        page.get_by_role("button", name="Create key").click()
    assert resp.value.status == 400  # the browser did not block it with its own wording
    expect(page.locator("#form-error")).to_contain_text("Please fix the 3 fields marked below")
    expect(page.locator("#rpm-error")).to_have_text(
        "A limit can't be negative. Leave it empty for no limit."
    )
    expect(page.locator("#budget_usd-error")).to_contain_text("can't be negative")
    expect(page.locator("#expires_at-error")).to_contain_text("in the past")
    assert page.get_by_label("Requests per minute").input_value() == "-5"  # kept as typed
    assert "Please match the requested format" not in page.content()
    shoot(page, "key-form-errors")

    page.get_by_label("Requests per minute").fill("60")
    page.get_by_label("Budget (USD)").fill("5")
    page.get_by_label("Expires at (UTC)").fill("2099-01-01T00:00")
    page.get_by_label("Models allowed").fill("gpt-test, gpt-tset")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#unknown-models")).to_contain_text("gpt-tset")
    expect(page.locator("#unknown-models")).not_to_contain_text("gpt-test,")
    page.get_by_role("link", name="Key settings").click()
    page.get_by_role("button", name="Save").click()  # its stored values pass as they are
    page.get_by_text("Key saved.").wait_for()
    expect(page.locator("#unknown-models")).to_contain_text("gpt-tset")

    # A key whose stored expiry has passed can still be edited and saved as it is.
    past = datetime.now(UTC) - timedelta(days=2)
    make_key(ui_stack.db_url, name="Lapsed", expires_at=past)
    page.goto("/keys?q=Lapsed")
    page.get_by_role("link", name="Edit Lapsed").click()
    page.get_by_label("Requests per minute").fill("5")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Key saved.").wait_for()


# --- playground --------------------------------------------------------------------------------


def test_playground_lists_discovered_models_compares_two_and_alerts_on_a_bad_key(
    page: Any, ui_stack: Stack, third: FakeUpstream
) -> None:
    ui_stack.reset()
    rt = ui_stack.gateway.app.runtime
    assert rt is not None and rt.upstreams is not None
    spec = {"name": "c", "base_url": third.base_url, "api_key": third.api_key}  # every model
    box = secret_box(rt.settings)
    ui_stack.gateway.call(upstream_service.create_upstream(rt.engine, spec, box))
    ui_stack.gateway.call(rt.upstreams.reload_db())
    ui_stack.gateway.call(rt.upstreams.discover_models())
    try:
        login(page)
        page.goto("/playground")
        model = page.get_by_label("Model", exact=True)
        chat_group = model.locator('optgroup[label="Chat models"]')
        embed_group = model.locator('optgroup[label="Embedding models"]')
        expect(chat_group.locator("option", has_text="c-chat")).to_have_count(1)  # discovered
        expect(embed_group.locator("option", has_text="nomic-embed-text")).to_have_count(1)
        expect(chat_group.locator("option", has_text="nomic")).to_have_count(0)

        # A typed name goes to the upstream serving every model.
        model.select_option("__custom__")
        page.get_by_label("Model name", exact=True).fill("typed-model-x")
        page.get_by_label("Message").fill("hello typed")
        page.get_by_role("button", name="Send").click()
        reply = page.locator(".msg.assistant").last
        expect(reply).to_have_attribute("data-state", "done")
        assert b'"typed-model-x"' in third.seen[-1].body

        # An embedding model: the vector's size, tokens and latency.
        model.select_option("nomic-embed-text")
        page.get_by_label("Message").fill("embed me")
        page.get_by_role("button", name="Send").click()
        reply = page.locator(".msg.assistant").last
        expect(reply).to_have_attribute("data-state", "done")
        expect(reply.locator(".meta")).to_contain_text("embedding of 3 dimensions")
        assert third.seen[-1].path == "/v1/embeddings"

        # Two models side by side, each with tokens, cost and latency.
        page.get_by_role("button", name="Clear").click()
        model.select_option("gpt-test")
        page.get_by_label("Compare with a second model").check()
        page.get_by_label("Second model", exact=True).select_option("other-model")
        page.get_by_label("Message").fill("compare")
        page.get_by_role("button", name="Send").click()
        pair = page.locator(".pair").last
        left, right = pair.locator(".msg.assistant").nth(0), pair.locator(".msg.assistant").nth(1)
        expect(left).to_have_attribute("data-state", "done")
        expect(right).to_have_attribute("data-state", "done")
        expect(left.locator(".who")).to_contain_text("gpt-test")
        expect(right.locator(".who")).to_contain_text("other-model")
        # gpt-test is priced (2 and 8 USD per 1M): 11 x 2 + 5 x 8 = 62 µUSD; other-model: "—".
        expect(left.locator(".meta")).to_contain_text("$0.000062")
        expect(right.locator(".meta")).to_contain_text("cost —")
        for side in (left, right):
            expect(side.locator(".meta")).to_contain_text("tokens")
            expect(side.locator(".meta")).to_contain_text("total")
        shoot(page, "playground-compare")

        # A bad pasted key: a visible alert, not small grey text.
        page.get_by_text("Use a client key instead").click()
        page.get_by_label("Client key").fill("tw-not-a-real-key-000000000000")
        page.get_by_label("Client key").press("Tab")
        alert = page.locator("#pg-alert")
        expect(alert).to_be_visible()
        expect(alert).to_contain_text("The gateway refused the key (HTTP 401)")
        page.set_viewport_size(PHONE)
        expect(alert).to_be_visible()
        shoot(page, "playground-bad-key")
    finally:
        drop_database_upstreams(ui_stack)


# --- dashboard ---------------------------------------------------------------------------------


def _seed_usage(stack: Stack) -> None:
    """A big-token hour two hours ago (the axis must show 600k+ whole), one the period before,
    and gaps in between."""
    from tollway.core.types import UsageEvent
    from tollway.store.db import create_engine
    from tollway.store.usage_writer import write_usage

    now = time.time()

    def event(ago_h: float, n: int, **kw: Any) -> UsageEvent:
        return UsageEvent(
            ts=now - ago_h * 3600,
            request_id=f"seed-{ago_h}-{n}-{time.monotonic_ns()}",
            key_id=None,
            method="POST",
            endpoint="/v1/chat/completions",
            model="gpt-test",
            upstream="a",
            status=200,
            latency_ms=120.0,
            **kw,
        )

    events = [event(2, 0, prompt_tokens=500_000, completion_tokens=150_000, total_tokens=650_000)]
    events += [event(3, 1), event(4, 2)]  # consecutive hours: a line, no lone points
    events += [event(30, i) for i in range(3)]  # the previous 24 hours

    async def write() -> None:
        engine = create_engine(stack.db_url)
        try:
            await write_usage(engine, events)
        finally:
            await engine.dispose()

    stack.gateway.call(write())


def chat(client: Any, model: str) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])


def test_dashboard_splits_errors_compares_filters_and_draws_readable_charts(
    page: Any, ui_stack: Stack
) -> None:
    ui_stack.reset()
    _seed_usage(ui_stack)
    client = ui_stack.client()
    chat(client, "other-model")
    with pytest.raises(openai.NotFoundError):  # Tollway's own 404: client-side
        chat(client, "no-such-model")
    ui_stack.a.behaviour.mode = "error"  # gpt-test is only on a: its 500 reaches the client
    with pytest.raises(openai.InternalServerError):  # upstream-side
        chat(client, "gpt-test")
    ui_stack.a.behaviour.mode = "ok"
    ui_stack.last_row(ui_stack.a)
    login(page)
    page.goto("/dashboard")
    expect(page.locator('[data-stat="client-errors"]')).not_to_have_text("0")
    client_errors = int(page.locator('[data-stat="client-errors"]').inner_text())
    upstream_errors = int(page.locator('[data-stat="upstream-errors"]').inner_text())
    assert client_errors >= 1 and upstream_errors >= 1
    # Compared with the period before (3 seeded requests there).
    expect(page.locator('[data-change="requests"]')).to_contain_text("%")

    charts = page.evaluate(
        """() => [...document.querySelectorAll('[data-chart]')].map(el => {
            const u = el.uplot, ax = u.axes[1];
            u.ctx.font = ax.font[0];
            const widest = Math.max(...ax._values.map(v => u.ctx.measureText(v).width));
            const ys = u.series.slice(1).map((s, i) => i + 1);
            return {name: el.dataset.chart, min: u.scales.x.min, max: u.scales.x.max,
                    labels: ax._values, widest: widest / devicePixelRatio, size: ax._size,
                    lone: ys.map(i => u.series[i].points.filter(u, i).length),
                    values: ys.map(i => u.data[i].filter(v => v != null).length)};
        })"""
    )
    assert len(charts) == 5
    # One x range for every chart, latency included.
    assert len({(c["min"], c["max"]) for c in charts}) == 1, charts
    tokens = next(c for c in charts if c["name"] == "tokens")
    assert any(label.endswith("k") for label in tokens["labels"]), tokens["labels"]
    assert all(c["widest"] + 10 <= c["size"] for c in charts), charts  # no clipped labels
    # Latency and error rates have gaps (hours without requests): the seeded consecutive hours
    # are joined by a line, so fewer points are drawn alone than there are values.
    for name in ("latency", "error_rate"):
        chart = next(c for c in charts if c["name"] == name)
        assert chart["values"][0] >= 3 and chart["lone"][0] < chart["values"][0], chart
    shoot(page, "dashboard-split")

    previous = next(c for c in charts if c["name"] == "requests")["values"][1]
    assert previous >= 1  # the dashed "Previous period" series has the seeded hours

    # Filters: by key, by model (each select applies at once), then by upstream.
    def top(table: str, name: str) -> str:
        row = page.locator(f"#{table} tr").filter(has=page.get_by_text(name, exact=True))
        return str(row.locator('[data-label="Requests"]').inner_text())

    test_key_requests = top("top-keys", "test")
    other_requests = top("top-models", "other-model")
    page.get_by_label("Key", exact=True).select_option(label="test")
    page.wait_for_url("**key_id=**")
    assert page.locator('[data-stat="requests"]').inner_text() == test_key_requests
    page.get_by_label("Key", exact=True).select_option("")
    page.wait_for_url(lambda url: "key_id=&" in url or url.endswith("key_id="))
    page.get_by_label("Model", exact=True).select_option("other-model")
    page.wait_for_url("**model=other-model**")
    assert page.locator('[data-stat="requests"]').inner_text() == other_requests
    page.get_by_label("Upstream", exact=True).select_option("a")
    page.wait_for_url("**upstream=a**")
    assert page.locator('[data-stat="requests"]').inner_text() == "0"

    # Dark mode follows the system setting.
    page.emulate_media(color_scheme="dark")
    page.goto("/dashboard")
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert background == "rgb(17, 20, 24)", background
    shoot(page, "dashboard-dark")
