"""Browser fixtures: Debian's Chromium driven by Playwright against a real running Tollway.

Playwright's own browser downloads are never used (`playwright install` is not run): the
driver that ships in the pip package launches /usr/bin/chromium. Without Chromium the browser
tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fixtures_gateway import Stack

CHROMIUM = Path(os.environ.get("TOLLWAY_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_SECRET = "ui-test-admin-secret-0123456789"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "ui"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000  # upper bound for a condition to become true, never a pause


def _no_chromium(reason: str) -> None:
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(f"{reason}; CI must run the browser tests (scripts/test installs chromium)")
    pytest.skip(f"{reason}; install it with `apt-get install chromium` to run browser tests")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        _no_chromium(f"Chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_chromium("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Tollway with an admin secret, two fake upstreams, SQLite."""
    s = Stack(tmp_path_factory.mktemp("ui"), admin_secret=ADMIN_SECRET)
    yield s
    s.stop()


@pytest.fixture
def page(browser: Any, ui_stack: Stack) -> Iterator[Any]:
    """A fresh browser context (no cookies) on desktop size, with base_url set."""
    context = browser.new_context(viewport=DESKTOP, base_url=ui_stack.url)
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def login(page: Any, secret: str = ADMIN_SECRET) -> None:
    page.goto("/login")
    page.get_by_label("Admin secret").fill(secret)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def shoot(page: Any, name: str) -> None:
    """Full-page screenshots at desktop and phone width, kept under test-artifacts/ui/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or DESKTOP
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        # two frames: layout, then anything that redraws on resize (charts)
        page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(size)
