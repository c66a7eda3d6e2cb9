"""HTML form fields → the plain dicts the services validate. Empty inputs mean "not set";
the services own every rule, so a bad value comes back as their Invalid message."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData

from tollway.services.errors import Invalid

KEY_COUNTS = ("rpm", "rpd", "tpm", "tpd", "token_quota", "max_parallel")


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional_text(form: FormData, name: str) -> str | None:
    return text(form, name) or None


def optional_int(form: FormData, name: str, label: str | None = None) -> int | None:
    raw = text(form, name).replace(",", "").replace("_", "")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"{label or name}: a whole number, please") from None


def optional_float(form: FormData, name: str, label: str | None = None) -> float | None:
    raw = text(form, name).replace(",", "").lstrip("$")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise Invalid(f"{label or name}: a number, please") from None


def name_list(form: FormData, name: str) -> list[str] | None:
    """Comma, space or newline separated names; empty = None (no restriction)."""
    items = [m for m in re.split(r"[\s,]+", text(form, name)) if m]
    return items or None


def utc_datetime(form: FormData, name: str, label: str | None = None) -> datetime | None:
    """A datetime-local (or date) input, read as UTC (the UI shows every time in UTC)."""
    return parse_utc(text(form, name), label or name)


def parse_utc(raw: str, label: str) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise Invalid(f"{label}: use YYYY-MM-DD HH:MM") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def checkbox(form: FormData, name: str) -> bool:
    return form.get(name) in ("on", "true", "1")


def key_fields(form: FormData) -> dict[str, Any]:
    """Every field of the key form; the services' KeyCreate/KeyUpdate validate them."""
    fields: dict[str, Any] = {
        "name": text(form, "name"),
        "email": optional_text(form, "email"),
        "expires_at": utc_datetime(form, "expires_at", "Expires"),
        "models": name_list(form, "models"),
        "budget_usd": optional_float(form, "budget_usd", "Budget"),
        "budget_period": text(form, "budget_period") or "none",
    }
    for name in KEY_COUNTS:
        fields[name] = optional_int(form, name)
    return fields


def datetime_local(value: datetime | None) -> str:
    """The value attribute of a datetime-local input (UTC, minutes)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if value else ""
