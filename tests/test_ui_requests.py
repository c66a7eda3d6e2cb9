"""Browser tests (Chromium, desktop and phone): finding a request by its id and reading its
detail (timing, attempts, error), the totals of a filtered set, field errors for invalid
filters, and the alerts page (add a webhook, test it, disable, remove)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from .fixtures_gateway import Stack, make_key
from .ui_fixtures import ADMIN_SECRET, PHONE, login, shoot
from .webhook_receiver import Receiver

pytestmark = pytest.mark.browser


def chat(stack: Stack, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {stack.key}"},
    )
    rid = answer.headers["x-request-id"]
    stack.row(rid)  # written
    return rid


def fits_phone(page: Any) -> None:
    page.set_viewport_size(PHONE)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways on a phone ({width}px)"


def test_find_a_failed_request_by_id_and_read_why(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    chat(ui_stack, "gpt-test")
    ui_stack.a.behaviour.mode = ui_stack.b.behaviour.mode = "error"
    failed = chat(ui_stack, "shared-model")
    ui_stack.reset()
    chat(ui_stack, "gpt-test")
    login(page)
    page.goto("/usage")
    page.get_by_label("Request id").fill(failed)
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("#usage-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-request-id", failed)
    expect(rows.first).to_contain_text("upstream exploded")  # the stored upstream message
    expect(page.locator('#usage-totals [data-stat="requests"]')).to_have_text("1")
    expect(page.locator('#usage-totals [data-stat="errors"]')).to_have_text("1")
    shoot(page, "usage-search")
    page.get_by_role("link", name=f"Details of request {failed}").click()
    page.wait_for_url(f"**/usage/{failed}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(failed)
    expect(page.locator("#detail-error")).to_contain_text("upstream exploded")
    attempts = page.locator("#detail-attempts tbody tr")
    expect(attempts).to_have_count(2)  # the failed one, then the answer passed through
    expect(attempts.nth(0)).to_contain_text("HTTP 500")
    expect(attempts.nth(1)).to_contain_text("answered 500")
    for stat in ("admitted", "first-byte", "total"):
        expect(page.locator(f'#detail-timing [data-stat="{stat}"]')).to_contain_text("ms")
    expect(page.locator("#detail-facts")).to_contain_text("shared-model")
    shoot(page, "usage-detail")
    fits_phone(page)
    page.goto("/usage/req_does_not_exist")
    expect(page.get_by_role("alert")).to_contain_text("no request with id req_does_not_exist")


def test_totals_follow_the_filters(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    for _ in range(2):
        chat(ui_stack, "gpt-test")
    ui_stack.a.behaviour.mode = "error"
    chat(ui_stack, "gpt-test")
    ui_stack.reset()
    login(page)
    page.goto("/usage")
    listed = page.locator("#usage-table tbody tr").count()
    expect(page.locator("#totals-h")).to_have_text("Totals of all requests")
    expect(page.locator('#usage-totals [data-stat="requests"]')).to_have_text(f"{listed:,}")
    page.get_by_label("Status").select_option("error")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(lambda url: "status=error" in url)
    errors = page.locator("#usage-table tbody tr").count()
    assert 1 <= errors < listed
    expect(page.locator("#totals-h")).to_have_text("Totals of the matching requests")
    expect(page.locator('#usage-totals [data-stat="requests"]')).to_have_text(str(errors))
    expect(page.locator('#usage-totals [data-stat="errors"]')).to_have_text(str(errors))
    shoot(page, "usage-totals")
    fits_phone(page)


def test_an_invalid_filter_is_marked_on_its_field(page: Any, ui_stack: Stack) -> None:
    login(page)
    answer = page.goto("/usage?status=teapot&start=yesterday&model=gpt-test")
    assert answer.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("Usage")  # the page, not an error
    expect(page.get_by_role("alert")).to_contain_text("Some filters could not be read")
    expect(page.locator("#err-status")).to_contain_text("a class like 5xx")
    expect(page.locator("#f-status")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#err-start")).to_contain_text("Use a date and time")
    expect(page.locator("#f-model")).to_have_value("gpt-test")  # what was typed stays
    expect(page.locator("#err-model")).to_have_count(0)
    page.goto("/usage?start=2026-05-02T00:00&end=2026-05-01T00:00")
    expect(page.locator("#err-end")).to_have_text("“To” must be after “From”.")
    shoot(page, "usage-invalid-filter")
    fits_phone(page)


def test_alerts_page_adds_tests_and_removes_a_webhook(page: Any, ui_stack: Stack) -> None:
    receiver = Receiver("unused")
    try:
        login(page)
        page.get_by_role("link", name="Alerts", exact=True).click()
        page.get_by_label("Name").fill("ops-slack")
        page.get_by_label("URL").fill("not a url")
        page.get_by_role("button", name="Add webhook").click()
        expect(page.locator("#alert-error")).to_contain_text("http:// or https:// URL")
        expect(page.get_by_label("Name")).to_have_value("ops-slack")
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("upstream down").uncheck()
        page.get_by_role("button", name="Add webhook").click()
        secret = page.get_by_label("Signing secret").input_value()
        assert secret.startswith("whsec_")
        row = page.locator('#webhooks tr[data-webhook="ops-slack"]')
        expect(row).to_contain_text("http://127.0.0.1:")
        expect(row).not_to_contain_text("T0KEN")  # the URL's path (a token) is never shown
        expect(row).not_to_contain_text("upstream down")
        shoot(page, "alerts")
        fits_phone(page)
        page.set_viewport_size({"width": 1280, "height": 800})
        receiver.secret = secret
        row.get_by_role("button", name="Test ops-slack").click()
        expect(page.locator("#test-result")).to_have_text("The webhook took the test alert.")
        (test_alert,) = receiver.taken()  # signed with the secret the page showed
        assert test_alert["alert"]["kind"] == "test"
        # An alert raised now is sent to it and listed with its delivery.
        soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        make_key(ui_stack.db_url, name="expiring-soon", expires_at=soon)
        check = httpx.post(
            f"{ui_stack.url}/admin/api/alerts/check",
            headers={"Authorization": f"Bearer {ADMIN_SECRET}"},
        )
        assert len(check.json()) == 1
        assert receiver.wait_for(2)[1]["alert"]["key_name"] == "expiring-soon"
        monitor = ui_stack.gateway.app.runtime.alerts  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while monitor.sending and time.monotonic() < deadline:  # its result is being stored
            time.sleep(0.02)
        page.goto("/alerts")
        expect(page.locator("#recent-alerts tbody tr").first).to_contain_text("expiring-soon")
        expect(page.locator("#recent-alerts tbody tr").first).to_contain_text("sent to 1")
        page.locator('#webhooks tr[data-webhook="ops-slack"]').get_by_role(
            "button", name="Disable ops-slack"
        ).click()
        expect(page.locator('#webhooks tr[data-webhook="ops-slack"]')).to_contain_text("disabled")
        page.locator('#webhooks tr[data-webhook="ops-slack"]').get_by_role(
            "button", name="Remove ops-slack"
        ).click()
        expect(page.get_by_role("status")).to_have_text("Webhook removed.")
        expect(page.locator('#webhooks tr[data-webhook="ops-slack"]')).to_have_count(0)
    finally:
        receiver.stop()
