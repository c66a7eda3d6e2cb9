"""Logging in to the web UI over plain HTTP (no browser): the login form's double-submit token,
then the session cookie, handled by hand so Secure cookies and forwarded headers stay visible."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx


def login(
    url: str, secret: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, str | None]:
    """POST /login; returns the answer and the session cookie's value (None when refused)."""
    headers = headers or {}
    page = httpx.get(url + "/login", headers=headers)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    token = found.group(1)
    answer = httpx.post(
        url + "/login",
        data={"csrf": token, "secret": secret, "next": "/"},
        headers={**headers, "Cookie": f"tollway_login={token}"},
    )
    morsel = set_cookie(answer).get("tollway_session")
    return answer, (morsel.value if morsel is not None and morsel.value else None)


def set_cookie(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


def page_status(url: str, cookie: str, path: str = "/keys") -> int:
    """200 when the cookie is a valid session, 303 (to /login) when it is not."""
    return httpx.get(url + path, headers={"Cookie": f"tollway_session={cookie}"}).status_code
