"""Key commands: create-key, list-keys, get-key, update-key, enable/disable/rotate/delete-key.
Names and options as in the seed (`--name/-n --rate-limit/-r --expires/-e`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Column

from tollway.cli.backend import run
from tollway.cli.options import (
    BUDGET_PERIODS,
    AdminSecret,
    KeyId,
    Url,
    budget_opt,
    days_from_now,
    limit_opt,
    models_list,
    unlimited_if_zero,
)
from tollway.cli.output import (
    STATUS_STYLE,
    JsonFlag,
    err,
    money,
    num,
    out,
    print_json,
    right,
    table,
    when,
)
from tollway.services import keys

Email = Annotated[str | None, typer.Option(help="Owner's email.", show_default=False)]
Models = Annotated[
    str | None,
    typer.Option(help='Comma-separated allowed models; "*" = all (default).', show_default=False),
]
Period = Annotated[
    str | None,
    typer.Option("--budget-period", help="none, daily, weekly or monthly.", show_default=False),
]
# The limit options create-key and update-key share.
Rpd = Annotated[int | None, limit_opt("--rpd", help="Requests per day; 0 = unlimited.")]
Tpm = Annotated[int | None, limit_opt("--tpm", help="Tokens per minute; 0 = unlimited.")]
Tpd = Annotated[int | None, limit_opt("--tpd", help="Tokens per day; 0 = unlimited.")]
TokenQuota = Annotated[
    int | None, limit_opt("--token-quota", help="Total tokens ever; 0 = unlimited.")
]
Budget = Annotated[float | None, budget_opt("--budget", help="USD per period; 0 = none.")]
MaxParallel = Annotated[
    int | None, limit_opt("--max-parallel", help="Concurrent requests; 0 = unlimited.")
]

ResponseCache = Annotated[
    bool | None,
    typer.Option(
        "--cache/--no-cache",
        help="Answer this key's identical requests from the response cache.",
        show_default=False,
    ),
]


def _limits(
    rpm: int | None,
    rpd: int | None,
    tpm: int | None,
    tpd: int | None,
    token_quota: int | None,
    budget: float | None,
    period: str | None,
    max_parallel: int | None,
) -> dict[str, Any]:
    """Only the options given; 0 turns a limit off."""
    given = {
        "rpm": rpm,
        "rpd": rpd,
        "tpm": tpm,
        "tpd": tpd,
        "token_quota": token_quota,
        "budget_usd": budget,
        "max_parallel": max_parallel,
    }
    data: dict[str, Any] = {k: unlimited_if_zero(v) for k, v in given.items() if v is not None}
    if period is not None:
        if period not in BUDGET_PERIODS:
            raise typer.BadParameter(
                f"must be one of {', '.join(BUDGET_PERIODS)}", param_hint="--budget-period"
            )
        data["budget_period"] = period
    return data


def create_key(
    name: Annotated[str, typer.Option("--name", "-n", help="A name for the key.")],
    rate_limit: Annotated[
        int, typer.Option("--rate-limit", "-r", min=0, help="Requests per minute; 0 = unlimited.")
    ] = 0,
    expires: Annotated[
        int | None,
        typer.Option(
            "--expires", "-e", min=1, help="Days until the key expires.", show_default=False
        ),
    ] = None,
    email: Email = None,
    models: Models = None,
    rpd: Rpd = None,
    tpm: Tpm = None,
    tpd: Tpd = None,
    token_quota: TokenQuota = None,
    budget: Budget = None,
    budget_period: Period = None,
    max_parallel: MaxParallel = None,
    cache: ResponseCache = None,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Create a client key. The key is printed once and cannot be shown again."""
    data: dict[str, Any] = {"name": name, "email": email, "rpm": rate_limit or None}
    data |= _limits(None, rpd, tpm, tpd, token_quota, budget, budget_period, max_parallel)
    if expires is not None:
        data["expires_at"] = days_from_now(expires)
    if models is not None:
        data["models"] = models_list(models)
    if cache is not None:
        data["response_cache"] = cache
    created = run(url, admin_secret, lambda b: b.create_key(data))
    show_secret(created, as_json, "Created")


def show_secret(created: keys.CreatedKey, as_json: bool, verb: str) -> None:
    warning = "This key is shown only once. Store it now: it cannot be recovered."
    if as_json:
        print_json({"key": created.key, **created.info.model_dump(mode="json")})
        err.print(f"[yellow]warning:[/yellow] {warning}")
        return
    out.print(f"{verb} key [bold]{created.info.id}[/bold] ({created.info.name}):")
    typer.echo(f"\n    {created.key}\n")  # plain echo: never wrapped or styled, easy to copy
    out.print(f"[yellow]warning:[/yellow] {warning}")


def list_keys(
    search: Annotated[str | None, typer.Option("--search", "-s", help="Name/email/prefix.")] = None,
    status: Annotated[str | None, typer.Option(help="active, disabled or expired.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=keys.MAX_PAGE)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """List client keys, newest first."""
    page = run(
        url,
        admin_secret,
        lambda b: b.list_keys(offset=offset, limit=limit, search=search, status=status),
    )
    if as_json:
        print_json(page)
        return
    # Only the name may wrap; get-key and key-stats show everything else.
    rows = table(
        right("ID"),
        "Name",
        Column("Status", no_wrap=True),
        right("Spent / budget"),
        right("Tokens / quota"),
        right("Today"),
        Column("Last used", no_wrap=True),
    )
    for k in page.items:
        s = k.summary
        badge = s.badge if s is not None else k.status
        style = STATUS_STYLE[badge]
        rows.add_row(
            str(k.id),
            k.name,
            f"[{style}]{badge}[/{style}]",
            _against(money(s.spent_usd) if s else "—", k.budget_usd, money),
            _against(num(s.tokens_used) if s else "—", k.token_quota, num),
            num(s.requests_today) if s else "—",
            when(k.last_used_at, "%Y-%m-%d"),
        )
    out.print(rows)
    out.print(f"{len(page.items)} of {num(page.total)} key(s)")


def _against(used: str, allowed: float | None, show: Callable[[Any], str]) -> str:
    return used if allowed is None else f"{used} / {show(allowed)}"


def print_key(info: keys.KeyInfo) -> None:
    rows = table("Field", "Value")
    rows.show_header = False
    for field, value in info.model_dump(exclude={"summary"}).items():
        if isinstance(value, datetime) or value is None:
            text = when(value)
        elif isinstance(value, list):
            text = ", ".join(value) or "(none)"
        else:
            text = str(value)
        rows.add_row(field, text)
    if info.summary is not None:
        rows.add_row("badge", info.summary.badge)
        for reason in info.summary.reasons:
            rows.add_row("why", reason)
    out.print(rows)


def get_key(
    key_id: KeyId, as_json: JsonFlag = False, url: Url = None, admin_secret: AdminSecret = None
) -> None:
    """Show one key's details (never its secret)."""
    info = run(url, admin_secret, lambda b: b.get_key(key_id))
    print_json(info) if as_json else print_key(info)


def update_key(
    key_id: KeyId,
    name: Annotated[str | None, typer.Option("--name", "-n", help="A new name.")] = None,
    rate_limit: Annotated[
        int | None, limit_opt("--rate-limit", "-r", help="Requests per minute; 0 = unlimited.")
    ] = None,
    expires: Annotated[
        int | None,
        typer.Option(
            "--expires", "-e", min=0, help="Days from now; 0 = never expires.", show_default=False
        ),
    ] = None,
    email: Annotated[
        str | None, typer.Option(help='Owner\'s email; "" clears it.', show_default=False)
    ] = None,
    models: Models = None,
    rpd: Rpd = None,
    tpm: Tpm = None,
    tpd: Tpd = None,
    token_quota: TokenQuota = None,
    budget: Budget = None,
    budget_period: Period = None,
    max_parallel: MaxParallel = None,
    cache: ResponseCache = None,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Change a key's name, email, limits, budget, expiry or models; other fields stay."""
    changes = _limits(rate_limit, rpd, tpm, tpd, token_quota, budget, budget_period, max_parallel)
    if name is not None:
        changes["name"] = name
    if email is not None:
        changes["email"] = email or None
    if expires is not None:
        changes["expires_at"] = days_from_now(expires) if expires else None
    if models is not None:
        changes["models"] = models_list(models)
    if cache is not None:
        changes["response_cache"] = cache
    if not changes:
        raise typer.BadParameter("nothing to change: give at least one option")
    info = run(url, admin_secret, lambda b: b.update_key(key_id, changes))
    if as_json:
        print_json(info)
        return
    out.print(f"Key {info.id} ({info.name}) updated.")
    print_key(info)


def enable_key(key_id: KeyId, url: Url = None, admin_secret: AdminSecret = None) -> None:
    """Enable a key."""
    info = run(url, admin_secret, lambda b: b.set_enabled(key_id, True))
    out.print(f"Key {info.id} ({info.name}) is {info.status}.")


def disable_key(key_id: KeyId, url: Url = None, admin_secret: AdminSecret = None) -> None:
    """Disable a key; requests with it are refused within a second."""
    info = run(url, admin_secret, lambda b: b.set_enabled(key_id, False))
    out.print(f"Key {info.id} ({info.name}) is {info.status}.")


def rotate_key(
    key_id: KeyId, as_json: JsonFlag = False, url: Url = None, admin_secret: AdminSecret = None
) -> None:
    """Replace a key's secret; limits and usage history stay, the old secret stops working."""
    created = run(url, admin_secret, lambda b: b.rotate_key(key_id))
    show_secret(created, as_json, "Rotated")


def delete_key(
    key_id: KeyId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Delete a key for good (its usage rows are kept, unlinked)."""
    if not yes:
        typer.confirm(f"Delete key {key_id}?", abort=True)
    run(url, admin_secret, lambda b: b.delete_key(key_id))
    out.print(f"Key {key_id} deleted.")
