"""Browser test: "Log out everywhere" ends this browser's session and every other one."""

from __future__ import annotations

from typing import Any

import pytest

from .fixtures_gateway import Stack
from .ui_fixtures import DESKTOP, WAIT_MS, login

pytestmark = pytest.mark.browser


def test_log_out_everywhere_ends_the_other_browsers_session(
    ui_stack: Stack, browser: Any, page: Any
) -> None:
    other = browser.new_context(viewport=DESKTOP, base_url=ui_stack.url)
    other.set_default_timeout(WAIT_MS)
    try:
        elsewhere = other.new_page()
        login(elsewhere)
        elsewhere.goto("/keys")
        assert elsewhere.url.endswith("/keys")

        login(page)
        page.get_by_role("button", name="Log out everywhere").click()
        page.wait_for_url("**/login")
        page.goto("/keys")
        assert "/login" in page.url

        elsewhere.goto("/keys")  # its cookie is still in that browser, and refused
        assert "/login" in elsewhere.url
        assert other.cookies()  # the cookie was not simply deleted there
    finally:
        other.close()
