"""Field-level checks of the key form, in plain words, before the service sees it: a person
typing "-5" should read "can't be negative", not pydantic's text. The service still owns every
rule (its messages land on the field they name); what only makes sense for a person typing
lives here: an expiry in the past is refused, an unknown model name is warned about."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData

from tollway.services.errors import Invalid
from tollway.ui import forms
from tollway.upstreams.pool import Pool

COUNT_MAX = {"token_quota": 2**53}
COUNT_MAX_DEFAULT = 2**31 - 1
LABELS = {
    "name": "Name",
    "email": "Email",
    "expires_at": "Expires at",
    "models": "Models allowed",
    "rpm": "Requests per minute",
    "rpd": "Requests per day",
    "tpm": "Tokens per minute",
    "tpd": "Tokens per day",
    "token_quota": "Token quota",
    "max_parallel": "Parallel requests",
    "budget_usd": "Budget",
    "budget_period": "Budget period",
}


class FormErrors(Exception):
    """One message per field; shown next to it (and counted in a summary at the top)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def key_form(
    form: FormData, stored_expiry: datetime | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The key form's fields for the service, or FormErrors. An expiry already in the past is
    refused unless it is the one stored (saving an expired key's other settings)."""
    errors: dict[str, str] = {}
    fields: dict[str, Any] = {
        "name": forms.text(form, "name"),
        "email": forms.optional_text(form, "email"),
        "models": forms.name_list(form, "models"),
        "budget_period": forms.text(form, "budget_period") or "none",
    }
    if not fields["name"]:
        errors["name"] = "Give the key a name, so you can tell it apart in reports."
    email = fields["email"]
    if email is not None and ("@" not in email or len(email) > 320):
        errors["email"] = "This does not look like an email address."
    for name in forms.KEY_COUNTS:
        fields[name] = _count(form, name, errors)
    fields["budget_usd"] = _budget(form, errors)
    fields["expires_at"] = _expiry(form, stored_expiry, now or datetime.now(UTC), errors)
    if errors:
        raise FormErrors(errors)
    return fields


def _count(form: FormData, name: str, errors: dict[str, str]) -> int | None:
    raw = forms.text(form, name).replace(",", "").replace("_", "").replace(" ", "")
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors[name] = "Enter a whole number, like 60 (or leave it empty for no limit)."
        return None
    if value < 0:
        errors[name] = "A limit can't be negative. Leave it empty for no limit."
    elif value > COUNT_MAX.get(name, COUNT_MAX_DEFAULT):
        errors[name] = f"That is too large: at most {COUNT_MAX.get(name, COUNT_MAX_DEFAULT):,}."
    return value


def _budget(form: FormData, errors: dict[str, str]) -> float | None:
    raw = forms.text(form, "budget_usd").replace(",", "").lstrip("$").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        errors["budget_usd"] = "Enter an amount in dollars, like 5 or 12.50."
        return None
    if value != value or value in (float("inf"), float("-inf")):
        errors["budget_usd"] = "Enter an amount in dollars, like 5 or 12.50."
    elif value < 0:
        errors["budget_usd"] = "A budget can't be negative. Leave it empty for no budget."
    return value


def _expiry(
    form: FormData, stored: datetime | None, now: datetime, errors: dict[str, str]
) -> datetime | None:
    try:
        value = forms.utc_datetime(form, "expires_at", "Expires at")
    except Invalid:
        errors["expires_at"] = "Pick a date and time, or write it as YYYY-MM-DD HH:MM (UTC)."
        return None
    unchanged = stored is not None and value is not None and _minute(value) == _minute(stored)
    if value is not None and value <= now and not unchanged:
        errors["expires_at"] = (
            "That time is in the past, so the key would stop working at once. Pick a later "
            "time, or disable the key instead."
        )
    return value


def _minute(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(second=0, microsecond=0)


def service_errors(message: str) -> dict[str, str]:
    """A service's Invalid message ("rpm: ...; email: ...") spread over the fields it names;
    anything naming no field goes under "" (shown at the top)."""
    out: dict[str, str] = {}
    for part in message.split("; "):
        field, sep, text = part.partition(": ")
        key = field if sep and field in LABELS else ""
        text = text if key else part
        out[key] = f"{out[key]} {text}" if key in out else text
    return out


def unknown_models(pool: Pool, names: list[str] | None) -> list[str]:
    """Names no upstream is known to serve (a typo, most often). An upstream serving every
    model counts only through the models discovery found on it; with none discovered yet,
    nothing can be called unknown."""
    if not names:
        return []
    known: set[str] = set(pool.policy.fallbacks)
    for up in pool.upstreams:
        if up.models is None and up.discovered_models is None:
            return []
        known |= up.public_models()
    return [m for m in names if m not in known]
