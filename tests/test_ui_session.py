"""The UI session cookie: signed, expiring, bound to the admin secret (no browser needed)."""

from __future__ import annotations

from tollway.ui import session as sessions

KEY = sessions.derive_key("digest-of-the-admin-secret", None)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_is_valid_until_it_expires() -> None:
    clock = Clock(1_000_000.0)
    value, issued = sessions.issue(KEY, ttl=3600, clock=clock)
    assert sessions.read(KEY, value, clock) == issued
    clock.now += 3599
    assert sessions.read(KEY, value, clock) == issued
    clock.now += 1
    assert sessions.read(KEY, value, clock) is None


def test_tampered_or_foreign_cookies_are_refused() -> None:
    clock = Clock(1_000_000.0)
    value, issued = sessions.issue(KEY, ttl=3600, clock=clock)
    version, expires, csrf, mac = value.split(".")
    longer = f"{version}.{int(expires) + 10**6}.{csrf}.{mac}"
    other_csrf = f"{version}.{expires}.{sessions.new_token()}.{mac}"
    for bad in (longer, other_csrf, value[:-2], "", "v1.x.y", f"v0.{expires}.{csrf}.{mac}"):
        assert sessions.read(KEY, bad, clock) is None, bad
    # A new admin secret (or TOLLWAY_SECRET_KEY) means a new key: old sessions end.
    for key in (
        sessions.derive_key("digest-of-a-new-secret", None),
        sessions.derive_key("digest-of-the-admin-secret", "a-secret-key"),
    ):
        assert sessions.read(key, value, clock) is None
    assert issued.csrf in value and len(issued.csrf) >= 32


def test_csrf_tokens_compare_exactly() -> None:
    assert sessions.same_token("abc", "abc")
    assert not sessions.same_token("abc", "abd")
    assert not sessions.same_token("abc", None)
    assert not sessions.same_token(None, None)
    assert not sessions.same_token("", "")
