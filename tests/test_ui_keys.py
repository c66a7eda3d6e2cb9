"""Browser tests: login, keys (shown once, used from the SDK, disabled, rotated, deleted),
and the request showing up in the usage explorer and on the dashboard."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import expect

from .fixtures_gateway import Stack, make_key
from .ui_fixtures import ADMIN_SECRET, login, shoot

pytestmark = pytest.mark.browser


def refused(stack: Stack, key: str, timeout: float = 10.0) -> bool:
    """True once the gateway refuses the key (admin changes reach the key cache within a
    revision poll); False if it still works at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stack.client(key=key).models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            return True
        time.sleep(0.05)
    return False


def accepted(stack: Stack, key: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stack.client(key=key).models.list()
            return True
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            time.sleep(0.05)
    return False


def test_wrong_secret_is_refused(page: Any, ui_stack: Stack) -> None:
    page.goto("/keys")
    page.wait_for_url("**/login?next=%2Fkeys")
    page.get_by_label("Admin secret").fill("not-the-secret-at-all-123")
    with page.expect_response("**/login") as resp:
        page.get_by_role("button", name="Log in").click()
    assert resp.value.status == 401
    assert page.get_by_role("alert").inner_text() == "That is not the admin secret."
    assert not [c for c in page.context.cookies() if c["name"] == "tollway_session"]
    shoot(page, "login-refused")
    page.goto("/keys")
    assert page.url.endswith("/login?next=%2Fkeys")


def test_login_sets_a_strict_httponly_session_and_logout_ends_it(
    page: Any, ui_stack: Stack
) -> None:
    page.goto("/keys")
    page.get_by_label("Admin secret").fill(ADMIN_SECRET)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/keys")  # back where the admin wanted to go
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "tollway_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["expires"] > time.time() + 3600
    assert not cookie["secure"]  # plain http on 127.0.0.1; https gets Secure
    assert ADMIN_SECRET not in cookie["value"]
    page.get_by_role("button", name="Log out", exact=True).click()
    page.wait_for_url("**/login")
    page.goto("/")
    assert "/login" in page.url


def test_create_key_shown_once_then_used_from_the_sdk(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    login(page)
    page.get_by_role("link", name="Keys", exact=True).click()
    page.get_by_role("link", name="New key").click()
    page.get_by_label("Name").fill("Browser app")
    page.get_by_label("Email").fill("app@example.com")
    page.get_by_label("Requests per minute").fill("600")
    page.get_by_label("Models allowed").fill("gpt-test, shared-model")
    shoot(page, "key-new")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Key").input_value()
    assert secret.startswith("tw-") and len(secret) > 30
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shoot(page, "key-created")

    # Shown once: neither the list nor the key's page carries it again.
    page.goto("/keys")
    row = page.locator("tr", has_text="Browser app")
    assert row.get_by_text("600 rpm").is_visible()
    assert secret not in page.content()
    row.get_by_role("link", name="Browser app", exact=True).click()
    assert secret not in page.content()
    assert page.get_by_label("Models allowed").input_value() == "gpt-test, shared-model"

    # The key works from the official SDK, and the request is recorded.
    raw = ui_stack.client(key=secret).chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "from the sdk"}]
    )
    request_id = raw.headers["x-request-id"]
    assert raw.parse().choices[0].message.content == "Hello from upstream"
    ui_stack.row(request_id)  # the background writer has stored it

    page.goto("/usage")
    page.get_by_label("Key").select_option(label=f"Browser app ({secret[:10]}…)")
    page.get_by_role("button", name="Apply").click()
    record = page.locator(f'tr[data-request-id="{request_id}"]')
    record.wait_for()
    assert "gpt-test" in record.inner_text() and "200" in record.inner_text()
    assert page.locator("#usage-table tbody tr").count() == 1
    shoot(page, "usage")

    csv = page.request.get(page.get_by_role("link", name="Download CSV").get_attribute("href"))
    assert csv.ok and request_id in csv.text() and csv.text().startswith("id,ts,request_id")

    page.goto("/dashboard")
    top = page.locator("#top-keys tr", has_text="Browser app")
    assert top.locator('td[data-label="Requests"]').inner_text() == "1"
    assert page.locator("#top-models", has_text="gpt-test").is_visible()
    assert int(page.locator('[data-stat="requests"]').inner_text().replace(",", "")) >= 1
    page.locator(".uplot").first.wait_for()
    assert page.locator(".uplot").count() == 5
    shoot(page, "dashboard")


def test_disable_from_the_ui_and_the_gateway_refuses(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    secret = make_key(ui_stack.db_url, name="Soon disabled")
    assert accepted(ui_stack, secret)
    login(page)
    page.goto("/keys")
    page.get_by_label("Search").fill("Soon disabled")
    row = page.locator("#keys-table tbody tr")
    expect(row).to_have_count(1)
    assert "Soon disabled" in row.inner_text()
    shoot(page, "keys")
    row.get_by_role("button", name="Disable Soon disabled").click()
    page.get_by_text("Key disabled: the gateway refuses it from now on.").wait_for()
    assert page.locator("tr", has_text="Soon disabled").get_by_text("disabled").count() >= 1
    assert refused(ui_stack, secret)

    page.locator("tr", has_text="Soon disabled").get_by_role("button", name="Enable").click()
    page.get_by_text("Key enabled").wait_for()
    assert accepted(ui_stack, secret)


def test_rotate_and_delete(page: Any, ui_stack: Stack) -> None:
    old = make_key(ui_stack.db_url, name="Rotating")
    login(page)
    page.goto("/keys?q=Rotating")
    page.get_by_role("link", name="Edit Rotating").click()
    shoot(page, "key-edit")
    page.once("dialog", lambda d: d.accept())  # "Rotate this key?"
    page.get_by_role("button", name="Rotate secret").click()
    new = page.get_by_label("Key").input_value()
    assert new != old and new.startswith("tw-")
    assert refused(ui_stack, old) and accepted(ui_stack, new)

    page.get_by_role("link", name="Key settings").click()
    page.get_by_role("link", name="Delete…").click()
    shoot(page, "key-delete")
    page.get_by_role("link", name="Cancel").click()  # cancelling deletes nothing
    assert accepted(ui_stack, new, timeout=1)
    page.get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name="Delete for good").click()
    page.get_by_text("Key deleted.").wait_for()
    assert refused(ui_stack, new)


def test_edit_rejects_bad_input_next_to_the_field(page: Any, ui_stack: Stack) -> None:
    make_key(ui_stack.db_url, name="Editable")
    login(page)
    page.goto("/keys?q=Editable")
    page.get_by_role("link", name="Edit Editable").click()
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("Email").evaluate("el => el.type = 'text'")  # past the browser's check
    with page.expect_response(lambda r: r.request.method == "POST") as resp:
        page.get_by_role("button", name="Save").click()
    assert resp.value.status == 400
    assert "Please fix the 1 field marked below" in page.get_by_role("alert").inner_text()
    # The message sits next to the field, in plain words, and the field says it is invalid.
    assert "does not look like an email address" in page.locator("#email-error").inner_text()
    assert page.get_by_label("Email").get_attribute("aria-invalid") == "true"
    page.get_by_label("Email").fill("ok@example.com")
    page.get_by_label("Tokens per day").fill("1,000")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Key saved.").wait_for()
    assert page.get_by_label("Tokens per day").input_value() == "1000"


def test_pages_need_a_session(ui_stack: Stack) -> None:
    with httpx.Client(base_url=ui_stack.url) as http:
        for path in ("/", "/dashboard", "/keys", "/upstreams", "/usage", "/playground"):
            resp = http.get(path)
            assert resp.status_code == 303 and resp.headers["location"].startswith("/login")
        live = http.get("/live", headers={"HX-Request": "true"})
        assert live.status_code == 401 and live.headers["hx-redirect"].startswith("/login")
        assert http.get("/nope").json()["error"]["code"] == "not_found"  # API clients: JSON
        page = http.get("/nope", headers={"Accept": "text/html"})
        assert page.status_code == 404 and "Nothing lives at /nope" in page.text
    forged = {"tollway_session": "v1.9999999999.abc.forged"}
    with httpx.Client(base_url=ui_stack.url, cookies=forged) as http:
        assert http.get("/keys").status_code == 303
