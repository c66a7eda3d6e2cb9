"""Browser tests: CSRF and origin checks, upstream management, the live overview, and every
page at desktop and phone width (screenshots in test-artifacts/ui/, no sideways scrolling)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from .fixtures_gateway import Stack
from .ui_fixtures import ADMIN_SECRET, PHONE, login, shoot

pytestmark = pytest.mark.browser


def _keys_named(page: Any, name: str) -> int:
    page.goto(f"/keys?q={name}")
    return int(page.locator("#keys-table tbody tr").count())


def test_state_changes_without_the_csrf_token_are_refused(page: Any, ui_stack: Stack) -> None:
    login(page)
    page.goto("/keys")
    token = page.locator('input[name="csrf"]').first.input_value()
    http = page.request  # the browser's own cookies: a logged-in admin

    no_token = http.post("/keys", form={"name": "csrf-less"})
    assert no_token.status == 403 and "CSRF" in no_token.text()
    wrong = http.post("/keys", form={"name": "csrf-less", "csrf": "x" * 32})
    assert wrong.status == 403
    other_site = http.post(
        "/keys",
        form={"name": "csrf-less", "csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status == 403
    cross = http.post(
        "/keys", form={"name": "csrf-less", "csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status == 403
    assert _keys_named(page, "csrf-less") == 0

    for path in ("/keys/1/disable", "/keys/1/delete", "/keys/1/rotate", "/upstreams", "/logout"):
        assert http.post(path, form={"name": "x"}).status == 403, path
    assert http.post("/upstreams/test", form={"name": "a"}).status == 403

    # The same post with the page's token goes through (so the refusals above were about it).
    ok = http.post("/keys", form={"name": "csrf-ok", "csrf": token})
    assert ok.status == 200 and "shown only this once" in ok.text()
    assert _keys_named(page, "csrf-ok") == 1
    # A header token (what htmx sends) works too.
    assert http.post("/upstreams/test", form={"name": "a"}, headers={"X-CSRF-Token": token}).ok


def test_login_form_needs_its_own_token(ui_stack: Stack) -> None:
    with httpx.Client(base_url=ui_stack.url) as http:
        resp = http.post("/login", data={"secret": ADMIN_SECRET})
        assert resp.status_code == 403 and "tollway_session" not in resp.cookies
        form = http.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        resp = http.post("/login", data={"secret": ADMIN_SECRET, "csrf": token.group(1)})
        assert resp.status_code == 303 and "tollway_session" in resp.cookies
        assert http.get("/keys").status_code == 200
        page = http.get("/keys")
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_upstreams_add_test_edit_remove(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    login(page)
    page.get_by_role("link", name="Upstreams").click()
    expect(page.locator('tr[data-upstream="a"]')).to_contain_text("healthy")
    page.get_by_role("link", name="Add upstream").click()
    page.get_by_label("Name").fill("c")
    page.get_by_label("Base URL").fill(ui_stack.b.base_url)
    page.get_by_label("API key").fill(ui_stack.b.api_key)
    page.get_by_label("Models").fill("c-model")
    page.get_by_label("Balance (USD, manual)").fill("12.50")
    shoot(page, "upstream-new")
    page.get_by_role("button", name="Add upstream").click()
    expect(page.get_by_role("status")).to_contain_text("Upstream added")
    assert ui_stack.b.api_key not in page.content()  # stored encrypted, shown masked

    # The pool picks it up within a revision poll; Reload shows it live.
    row = page.locator('tr[data-upstream="c"]')
    for _ in range(50):
        if row.count():
            break
        page.get_by_role("button", name="Reload").click()
        page.wait_for_load_state("networkidle")
    expect(row).to_contain_text("database")
    expect(row).to_contain_text("$12.50")
    row.get_by_role("button", name="Test c").click()
    expect(row.locator(".test-result")).to_contain_text("HTTP 200")
    shoot(page, "upstreams-tested")

    # Requests for its model really go there.
    reply = ui_stack.client().chat.completions.create(
        model="c-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from upstream"
    assert ui_stack.b.seen[-1].headers["Authorization"] == f"Bearer {ui_stack.b.api_key}"

    # A wrong key makes the test button say so (the upstream's answer, key masked).
    page.get_by_role("link", name="Edit c").click()
    page.get_by_label("API key").fill("sk-wrong-key-000000")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Upstream saved")
    for _ in range(50):
        page.get_by_role("button", name="Reload").click()
        page.wait_for_load_state("networkidle")
        page.locator('tr[data-upstream="c"]').get_by_role("button", name="Test c").click()
        result = page.locator('tr[data-upstream="c"] .test-result')
        expect(result).not_to_be_empty()
        if "HTTP 401" in result.inner_text():
            break
    assert "HTTP 401" in result.inner_text() and "sk-wrong-key-000000" not in result.inner_text()

    page.get_by_role("link", name="Remove c").click()
    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_contain_text("Upstream removed")
    assert page.get_by_role("link", name="Edit c").count() == 0


def test_overview_refreshes_by_itself(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    login(page)
    requests = page.locator('#totals-day [data-stat="requests"]')
    before = requests.inner_text()
    shoot(page, "overview")
    ui_stack.client().chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "tick"}]
    )
    ui_stack.last_row()  # stored
    # No reload: the block re-fetches itself (every 5 s) and shows the new count.
    expect(requests).not_to_have_text(before, timeout=20_000)
    assert int(requests.inner_text().replace(",", "")) == int(before.replace(",", "")) + 1


@pytest.mark.parametrize(
    "path, name",
    [
        ("/", "overview"),
        ("/dashboard?range=7d", "dashboard-7d"),
        ("/dashboard?range=30d&bucket=day", "dashboard-30d"),
        ("/keys", "keys"),
        ("/keys/new", "key-new"),
        ("/upstreams", "upstreams"),
        ("/upstreams/new", "upstream-new"),
        ("/usage", "usage"),
        ("/playground", "playground"),
    ],
)
def test_every_page_fits_a_phone(page: Any, ui_stack: Stack, path: str, name: str) -> None:
    login(page)
    page.goto(path)
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").count() == 1
    # Every form control has a label a screen reader can announce.
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.name || el.id)"""
    )
    assert unlabelled == []
    shoot(page, name)
    page.set_viewport_size(PHONE)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{path} scrolls sideways on a phone ({width}px)"
