"""Upstream keys from a PocketBase collection (the seed's recommended source).

PocketBase's Web API (v0.23+): authenticate with
`POST /api/collections/{auth collection}/auth-with-password` `{"identity", "password"}`
-> `{"token", "record"}` (the superusers collection is `_superusers`; a plain auth collection
such as `users` works when the collection's list rule lets its users read), then page through
`GET /api/collections/{collection}/records?page=N&perPage=M` with `Authorization: <token>`
-> `{"page", "perPage", "totalItems", "totalPages", "items": [...]}`.
Records carry `name`, `api_key` and optionally `mail` (the account) and `enabled`.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import aiohttp

from .config import PocketBaseConfig, expand_env
from .egress import EgressDefaults
from .headers import has_control

log = logging.getLogger("tollway.upstreams")

MAX_PAGES = 1000


class PocketBaseUnavailable(Exception):
    """Unreachable, refused our login, or answered nonsense. The message has no secrets."""


async def _json(resp: aiohttp.ClientResponse, what: str) -> Any:
    if resp.status != 200:
        raise PocketBaseUnavailable(f"{what} answered HTTP {resp.status}")
    try:
        return await resp.json(content_type=None)
    except ValueError as exc:
        raise PocketBaseUnavailable(f"{what} answered invalid JSON") from exc


async def fetch_keys(
    session: aiohttp.ClientSession, cfg: PocketBaseConfig, net: EgressDefaults | None = None
) -> list[dict[str, str]]:
    """Every usable record as {"name", "mail", "api_key"}; raises PocketBaseUnavailable."""
    base = expand_env(cfg.url).rstrip("/")
    timeout = aiohttp.ClientTimeout(total=cfg.timeout)
    options = (net or EgressDefaults()).aiohttp_options(base)  # the global CA and proxies
    try:
        auth_url = f"{base}/api/collections/{quote(cfg.auth_collection)}/auth-with-password"
        body = {"identity": expand_env(cfg.email), "password": expand_env(cfg.password)}
        async with session.post(auth_url, json=body, timeout=timeout, **options) as resp:
            token = (await _json(resp, "login")).get("token")
        if not isinstance(token, str) or not token:
            raise PocketBaseUnavailable("login answer has no token")
        headers = {"Authorization": token}
        url = f"{base}/api/collections/{quote(cfg.collection)}/records"
        records: list[Any] = []
        page = 1
        while page <= MAX_PAGES:
            params = {"page": str(page), "perPage": str(cfg.per_page), "sort": "id"}
            async with session.get(
                url, params=params, headers=headers, timeout=timeout, **options
            ) as resp:
                data = await _json(resp, f"records page {page}")
            items = data.get("items") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise PocketBaseUnavailable(f"records page {page} has no items")
            records.extend(items)
            total_pages = data.get("totalPages")
            if not items or not isinstance(total_pages, int) or page >= total_pages:
                break
            page += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PocketBaseUnavailable(f"{type(exc).__name__} talking to {base}") from exc
    return keys_from_records(records)


def keys_from_records(records: list[Any]) -> list[dict[str, str]]:
    keys: list[dict[str, str]] = []
    names: set[str] = set()
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or rec.get("enabled") is False:
            continue
        api_key = rec.get("api_key")
        if not isinstance(api_key, str) or not api_key.strip():
            continue
        name = str(rec.get("name") or rec.get("id") or f"key-{i + 1}")
        if has_control(api_key.strip()):
            log.error(
                "PocketBase record %s (%r): api_key contains a control character; skipped",
                rec.get("id") or i + 1,
                name,
            )
            continue
        if name in names:  # names should be unique; the record id makes them so
            name = f"{name}-{rec.get('id') or i + 1}"
        names.add(name)
        keys.append({"name": name, "mail": str(rec.get("mail") or ""), "api_key": api_key.strip()})
    return keys
