"""Options several commands share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TOLLWAY_URL",
        help="Work on a running Tollway through its admin API (e.g. https://gw.example.com) "
        "instead of the configured database.",
        rich_help_panel="Remote",
    ),
]
AdminSecret = Annotated[
    str | None,
    typer.Option(
        "--admin-secret",
        envvar="TOLLWAY_ADMIN_SECRET",
        help="The admin secret for --url.",
        show_default=False,
        rich_help_panel="Remote",
    ),
]
KeyId = Annotated[int, typer.Argument(min=1, help="The key's numeric id.")]


def limit_opt(*names: str, help: str) -> Any:
    """A limit option; 0 = unlimited, as the seed's --rate-limit always meant."""
    return typer.Option(*names, min=0, help=help, show_default=False)


def budget_opt(*names: str, help: str) -> Any:
    return typer.Option(*names, min=0.0, help=help, show_default=False)


BUDGET_PERIODS = ("none", "daily", "weekly", "monthly")


def unlimited_if_zero(v: int | float | None) -> int | float | None:
    return v if v else None


def days_from_now(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def models_list(value: str) -> list[str] | None:
    """ "a,b" → ["a", "b"]; "*" → None (every model)."""
    if value.strip() == "*":
        return None
    return [m.strip() for m in value.split(",") if m.strip()]


def parse_span(value: str) -> timedelta:
    """ "90m", "24h", "7d", "2w" → a timedelta."""
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    v = value.strip().lower()
    if len(v) < 2 or v[-1] not in units or not v[:-1].isdigit() or int(v[:-1]) < 1:
        raise typer.BadParameter("use a number and a unit: 90m, 24h, 7d, 2w")
    return timedelta(**{units[v[-1]]: int(v[:-1])})
