"""The UI session cookie: signed with the server secret, expiring, bound to the admin secret and
the session generation (no browser needed)."""

from __future__ import annotations

from tollway.ui import session as sessions

KEY = sessions.derive_key("the-server-secret", "digest-of-the-admin-secret")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_is_valid_until_it_expires() -> None:
    clock = Clock(1_000_000.0)
    value, issued = sessions.issue(KEY, ttl=3600, clock=clock)
    assert sessions.read(KEY, value, clock=clock) == issued
    clock.now += 3599
    assert sessions.read(KEY, value, clock=clock) == issued
    clock.now += 1
    assert sessions.read(KEY, value, clock=clock) is None


def test_tampered_or_foreign_cookies_are_refused() -> None:
    clock = Clock(1_000_000.0)
    value, issued = sessions.issue(KEY, ttl=3600, generation=4, clock=clock)
    assert sessions.read(KEY, value, 4, clock) == issued
    version, gen, expires, csrf, mac = value.split(".")
    longer = f"{version}.{gen}.{int(expires) + 10**6}.{csrf}.{mac}"
    other_csrf = f"{version}.{gen}.{expires}.{sessions.new_token()}.{mac}"
    newer = f"{version}.5.{expires}.{csrf}.{mac}"
    for bad in (longer, other_csrf, newer, value[:-2], "", "v1.x.y", f"v1.{expires}.{csrf}.{mac}"):
        assert sessions.read(KEY, bad, 4, clock) is None, bad
    # Logged out everywhere: the generation moved on, the cookie is refused.
    assert sessions.read(KEY, value, 5, clock) is None
    # A new admin secret or server secret means a new key: old sessions end.
    for key in (
        sessions.derive_key("the-server-secret", "digest-of-a-new-secret"),
        sessions.derive_key("another-server-secret", "digest-of-the-admin-secret"),
    ):
        assert sessions.read(key, value, 4, clock) is None
    assert issued.csrf in value and len(issued.csrf) >= 32


def test_csrf_tokens_compare_exactly() -> None:
    assert sessions.same_token("abc", "abc")
    assert not sessions.same_token("abc", "abd")
    assert not sessions.same_token("abc", None)
    assert not sessions.same_token(None, None)
    assert not sessions.same_token("", "")
