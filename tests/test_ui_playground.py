"""Browser tests: the chat playground streams through the gateway token by token, with the
admin's playground key or a pasted client key, and its usage is recorded like any client's."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from .fixtures_gateway import Stack, make_key
from .ui_fixtures import login, shoot

pytestmark = pytest.mark.browser
TYPED = "[value='__custom__']"  # the "Type a model name…" choice

# Records the reply bubble's text at every DOM change, so the test sees each step of the stream.
WATCH = """() => {
  window.__snapshots = [];
  new MutationObserver(() => {
    const t = document.querySelector('.msg.assistant:last-of-type .text');
    if (t) window.__snapshots.push(t.textContent);
  }).observe(document.getElementById('chat-log'),
             {subtree: true, childList: true, characterData: true});
}"""


def test_playground_streams_tokens_incrementally(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    ui_stack.a.behaviour.chunks = 6
    ui_stack.a.behaviour.chunk_delay = 0.25  # slow enough for each chunk to render alone
    ui_stack.a.behaviour.reply = "one two three four five six"
    login(page)
    page.get_by_role("link", name="Playground").click()
    model = page.get_by_label("Model", exact=True)
    expect(model.locator("option", has_text="gpt-test")).to_have_count(1)
    expect(page.locator("#key-status")).to_contain_text("playground key")
    model.select_option("gpt-test")
    page.get_by_label("System prompt").fill("Be brief.")
    page.get_by_label("Max tokens").fill("64")
    page.evaluate(WATCH)
    page.get_by_label("Message").fill("Count to six")
    page.get_by_label("Message").press("Enter")  # keyboard: Enter sends
    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_attribute("data-state", "done")
    assert reply.locator(".text").inner_text().strip() == "one two three four five six"

    snapshots = [s.strip() for s in page.evaluate("window.__snapshots") if s.strip()]
    distinct = list(dict.fromkeys(snapshots))
    # The words arrived one at a time: every state is a prefix of the next, six in all.
    assert distinct == [
        "one",
        "one two",
        "one two three",
        "one two three four",
        "one two three four five",
        "one two three four five six",
    ]
    meta = reply.locator(".meta").inner_text()
    assert "11 prompt + 6 completion = 17 tokens" in meta
    assert "first token" in meta and "total" in meta and "ms" in meta
    shoot(page, "playground-chat")

    # What the browser sent went through the gateway, settings included.
    import orjson

    sent = orjson.loads(ui_stack.a.seen[-1].body)
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][-1] == {"role": "user", "content": "Count to six"}
    assert sent["max_tokens"] == 64 and sent["temperature"] == 0.7 and sent["stream"] is True
    row = ui_stack.last_row()
    assert row["completion_tokens"] == 6 and row["status"] == 200 and row["key_id"] is not None

    # Recorded on the admin's own playground key, visible in the usage explorer.
    page.goto(f"/usage?key_id={row['key_id']}")
    expect(page.locator(f'tr[data-request-id="{row["request_id"]}"]')).to_contain_text(
        "Admin playground"
    )

    # A follow-up keeps the conversation.
    page.goto("/playground")
    expect(
        page.get_by_label("Model", exact=True).locator("option", has_text="gpt-test")
    ).to_have_count(1)


def test_playground_key_rotates_per_visit_and_a_pasted_key_is_used(
    page: Any, ui_stack: Stack
) -> None:
    ui_stack.reset()
    login(page)
    page.goto("/playground")
    expect(page.locator("#key-status")).to_contain_text("model(s)")
    first = page.request.post("/playground/key", headers={"X-CSRF-Token": _csrf(page)})
    second = page.request.post("/playground/key", headers={"X-CSRF-Token": _csrf(page)})
    assert first.ok and second.ok and first.json()["key"] != second.json()["key"]
    assert page.request.post("/playground/key").status == 403  # no CSRF token: refused

    # The page's own key was rotated away meanwhile: the page fetches a fresh one, once.
    page.get_by_label("Message").fill("still there?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", "done")

    # A pasted client key: models limited to what that key may use, usage recorded on it.
    client = make_key(ui_stack.db_url, name="Pasted client", models=["other-model"])
    page.get_by_text("Use a client key instead").click()
    page.get_by_label("Client key").fill(client)
    page.get_by_label("Client key").press("Tab")  # change event reloads the models
    expect(page.locator("#key-status")).to_contain_text("pasted client key")
    expect(page.get_by_label("Model", exact=True).locator(f"option:not({TYPED})")).to_have_count(1)
    assert page.get_by_label("Model", exact=True).input_value() == "other-model"
    page.get_by_label("Message").fill("as a client")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", "done")
    row = ui_stack.last_row(ui_stack.b)
    assert row["model"] == "other-model"
    page.goto(f"/usage?key_id={row['key_id']}")
    expect(page.locator(f'tr[data-request-id="{row["request_id"]}"]')).to_contain_text(
        "Pasted client"
    )


def test_playground_shows_gateway_errors(page: Any, ui_stack: Stack) -> None:
    ui_stack.reset()
    ui_stack.a.behaviour.mode = "error"
    ui_stack.b.behaviour.mode = "error"
    login(page)
    page.goto("/playground")
    expect(
        page.get_by_label("Model", exact=True).locator("option", has_text="gpt-test")
    ).to_have_count(1)
    page.get_by_label("Model", exact=True).select_option("gpt-test")
    page.get_by_label("Message").fill("hello?")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_attribute("data-state", "error")
    expect(reply.locator(".meta.error")).to_contain_text("HTTP 5")


def _csrf(page: Any) -> str:
    token: str = page.locator(".playground").get_attribute("data-csrf")
    return token
