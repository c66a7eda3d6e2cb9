"""Browser tests: the keys list's badges and bars, the key page of the budget-exhausted key
from issue 15 ($0.053 of $0.05), and the prices page with the bundled import."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import expect

from .fixtures_gateway import Stack
from .ui_fixtures import ADMIN_SECRET, PHONE, login, shoot

pytestmark = pytest.mark.browser
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
INPUT_RATE = 0.0265 / 11 * 1_000_000  # the fake upstream's 11 prompt tokens cost $0.0265


def admin_api(stack: Stack) -> httpx.Client:
    return httpx.Client(
        base_url=stack.url + "/admin/api", headers={"Authorization": f"Bearer {ADMIN_SECRET}"}
    )


def exhausted_key(stack: Stack) -> int:
    with admin_api(stack) as api:
        api.post(
            "/prices",
            json={"model": "gpt-test", "input_per_mtok": INPUT_RATE, "output_per_mtok": 0},
        ).raise_for_status()
        resp = api.post(
            "/keys", json={"name": "Over budget", "budget_usd": 0.05, "budget_period": "monthly"}
        )
        key_id, key = resp.json()["info"]["id"], resp.json()["key"]
        busy = api.post("/keys", json={"name": "Busy", "budget_usd": 1.0, "token_quota": 100})
    client = stack.client(key=key)
    client.chat.completions.create(**CHAT)
    client.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**CHAT)
    stack.client(key=busy.json()["key"]).chat.completions.create(**CHAT)
    # The pages read the usage tables, which the writer fills a moment after the answers.
    stack.usage_rows(4)
    return int(key_id)


def no_sideways_scroll(page: Any) -> None:
    size = page.viewport_size
    page.set_viewport_size(PHONE)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways on a phone ({width}px)"
    page.set_viewport_size(size)


def test_keys_list_and_key_page_show_the_exhausted_key(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    key_id = exhausted_key(ui_stack)
    login(page)
    page.goto("/keys")
    row = page.locator(f"tr[data-key-id='{key_id}']")
    # usage rows are written in the background: reload until the badge has them
    for _ in range(50):
        if row.locator(".badge").inner_text() == "exhausted":
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(row.locator(".badge")).to_have_text("exhausted")
    expect(row).to_contain_text("budget spent: $0.053 of $0.05")
    bar = row.get_by_role("progressbar", name="Budget (this month)")
    assert bar.get_attribute("aria-valuenow") == "100.0"
    assert bar.get_attribute("aria-valuetext") == "$0.053 of $0.05 used, $0.00 left"
    expect(row.locator("td[data-label='Today']")).to_have_text("3")
    busy = page.locator("tr", has_text="Busy")
    expect(busy.locator(".badge")).to_have_text("active")
    tokens = busy.get_by_role("progressbar", name="Token quota")
    assert tokens.get_attribute("aria-valuetext") == "14 of 100 used, 86 left"
    no_sideways_scroll(page)
    shoot(page, "keys-badges")

    row.get_by_role("link", name="Over budget", exact=True).click()
    page.wait_for_url(f"**/keys/{key_id}")
    expect(page.locator("#key-badge")).to_have_text("exhausted")
    expect(page.locator("#key-reasons")).to_contain_text(
        "budget spent: $0.053 of $0.05 (this month)"
    )
    expect(page.locator("#requests-today")).to_have_text("3")
    limits = page.locator("table.limits")
    expect(limits).to_contain_text("Budget (monthly")
    expect(limits.locator("tr", has_text="Budget").locator("td").nth(2)).to_have_text("$0.00")
    expect(page.locator("#recent-requests tbody tr")).to_have_count(3)
    errors = page.locator("#recent-errors tbody tr")
    expect(errors).to_have_count(1)
    expect(errors).to_contain_text("insufficient_quota")
    expect(errors).to_contain_text("(refused by Tollway)")
    expect(page.locator("[data-key-chart='requests'] canvas")).to_have_count(1)
    expect(page.locator("[data-key-chart='cost'] canvas")).to_have_count(1)
    no_sideways_scroll(page)
    shoot(page, "key-page")


def test_prices_page_imports_the_bundled_table_and_sets_a_price(page: Any, ui_stack: Stack) -> None:
    ui_stack.client().chat.completions.create(model="other-model", messages=CHAT["messages"])
    login(page)
    page.get_by_role("link", name="Prices", exact=True).click()
    page.wait_for_url("**/prices")
    expect(page.locator("#unpriced")).to_contain_text("other-model")
    page.get_by_role("button", name="Import bundled prices").click()
    expect(page.get_by_role("status")).to_contain_text("Imported the list prices as of 2025-08-15")
    mini = page.locator("tr[data-model='gpt-4o-mini']")
    expect(mini.locator("td[data-label='Input']")).to_have_text("$0.15")
    expect(mini.locator("td[data-label='Cached input']")).to_have_text("$0.075")
    page.get_by_label("Model", exact=True).fill("other-model")
    page.get_by_label("Input ($ / 1M tokens)", exact=True).fill("0.00012")
    page.get_by_label("Output ($ / 1M tokens)").fill("1,000")
    page.get_by_role("button", name="Save price").click()
    expect(page.get_by_role("status")).to_have_text("Price saved.")
    other = page.locator("tr[data-model='other-model']")
    expect(other.locator("td[data-label='Input']")).to_have_text("$0.00012")
    expect(other.locator("td[data-label='Output']")).to_have_text("$1,000.00")
    expect(other.locator("td[data-label='Cached input']")).to_have_text("—")
    expect(page.locator("#unpriced")).to_have_count(0)
    page.get_by_label("Input ($ / 1M tokens)", exact=True).fill("-1")
    page.get_by_label("Model", exact=True).fill("bad")
    page.get_by_label("Output ($ / 1M tokens)").fill("1")
    page.get_by_role("button", name="Save price").click()
    expect(page.get_by_role("alert")).to_contain_text("input_per_mtok")
    no_sideways_scroll(page)
    shoot(page, "prices")
