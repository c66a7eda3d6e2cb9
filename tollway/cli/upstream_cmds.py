"""`tollway upstreams list/add/remove/test/status`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from tollway.cli.backend import Backend, run
from tollway.cli.options import AdminSecret, Url, models_list
from tollway.cli.output import JsonFlag, err, money, num, out, print_json, when
from tollway.services.upstreams import UpstreamInfo, UpstreamStatus

app = typer.Typer(
    name="upstreams",
    help="Upstreams the gateway forwards to: list, add, remove, test, status.",
    no_args_is_help=True,
)
UpstreamId = Annotated[int, typer.Argument(min=1, help="The upstream's numeric id.")]


@app.command("list")
def list_upstreams(
    as_json: JsonFlag = False, url: Url = None, admin_secret: AdminSecret = None
) -> None:
    """Every upstream with its source: the database's (editable here) and, read-only, those
    of the config file, its key lists and PocketBase (PocketBase needs --url: a running
    gateway). --json lists the database's only (the ids you can edit)."""
    if as_json:
        print_json(run(url, admin_secret, lambda b: b.list_upstreams()))
        return
    items, live = run(url, admin_secret, _stored_and_pool)
    others = [s for s in live if s.source != "database"]
    table = Table("ID", "Name", "Source", "Base URL", "Key", "Models", "Weight", "Enabled")
    for u in items:
        table.add_row(
            str(u.id),
            u.name,
            "database",
            u.base_url,
            u.key_hint or "-",
            ", ".join(u.models) if u.models is not None else "all",
            f"{u.weight:g}",
            "yes" if u.enabled else "no",
        )
    for s in others:
        table.add_row(
            "-",
            s.name,
            f"{s.source} (read-only)",
            s.base_url,
            s.key_hint or "-",
            ", ".join(s.models) if s.models is not None else "all",
            f"{s.weight:g}",
            "yes" if s.weight > 0 else "no",
        )
    out.print(table)
    out.print(
        f"{len(items) + len(others)} upstream(s): {len(items)} in the database, "
        f"{len(others)} read-only from the config file, key lists or PocketBase"
    )


async def _stored_and_pool(
    b: Backend,
) -> tuple[list[UpstreamInfo], list[UpstreamStatus]]:
    return await b.list_upstreams(), await b.upstream_status()


@app.command("add")
def add_upstream(
    name: Annotated[str, typer.Option("--name", "-n", help="A unique name.")],
    base_url: Annotated[str, typer.Option("--base-url", help="e.g. https://api.openai.com/v1")],
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", help='The upstream key; "-" reads it from stdin.', show_default=False
        ),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help='Comma-separated models it serves; "*" = all.')
    ] = None,
    weight: Annotated[float, typer.Option(min=0.0, help="Share of traffic.")] = 1.0,
    account: Annotated[
        str | None, typer.Option(help="Account its balance is shared with.", show_default=False)
    ] = None,
    provider: Annotated[
        str, typer.Option(help="openai, vercel, openrouter... (for balance probes).")
    ] = "openai",
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute cap.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute cap.")] = None,
    balance: Annotated[
        float | None,
        typer.Option("--balance", min=0.0, help="A manual balance in USD, spent down by usage."),
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it switched off.")] = False,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Add an upstream; its key is stored encrypted and never shown again."""
    if api_key == "-":
        api_key = sys.stdin.readline().strip()
    data: dict[str, Any] = {
        "name": name,
        "base_url": base_url,
        "api_key": api_key or None,
        "weight": weight,
        "account": account,
        "provider": provider,
        "rpm": rpm,
        "tpm": tpm,
        "manual_balance_usd": balance,
        "enabled": not disabled,
    }
    if models is not None:
        data["models"] = models_list(models)
    info = run(url, admin_secret, lambda b: b.add_upstream(data))
    if as_json:
        print_json(info)
        return
    out.print(f"Added upstream [bold]{info.id}[/bold] ({info.name}), key {info.key_hint or '-'}.")


@app.command("remove")
def remove_upstream(
    upstream_id: UpstreamId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Remove a database upstream; gateways stop using it within a second."""
    if not yes:
        typer.confirm(f"Remove upstream {upstream_id}?", abort=True)
    run(url, admin_secret, lambda b: b.remove_upstream(upstream_id))
    out.print(f"Upstream {upstream_id} removed.")


@app.command("test")
def test_upstream(
    upstream_id: UpstreamId,
    model: Annotated[
        str | None, typer.Option(help="Send a one-token chat to this model instead of /models.")
    ] = None,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """One real call through the upstream with its stored key. Exit 1 if it fails."""
    result = run(url, admin_secret, lambda b: b.test_upstream(upstream_id, model))
    if as_json:
        print_json(result)
    elif result.ok:
        out.print(f"[green]ok[/green] {num(result.status)} in {result.latency_ms:.0f} ms")
    else:
        status = f"HTTP {result.status}" if result.status is not None else "no answer"
        err.print(f"[red]failed[/red] {status}: {escape(readable_error(result.message))}")
    if not result.ok:
        raise typer.Exit(1)


@app.command("status")
def upstream_status(
    as_json: JsonFlag = False, url: Url = None, admin_secret: AdminSecret = None
) -> None:
    """Every upstream the gateway routes to: health, in-flight, latency, balance.
    Live figures need --url (a running gateway); locally it shows the configured pool."""
    items = run(url, admin_secret, lambda b: b.upstream_status())
    if as_json:
        print_json(items)
        return
    table = Table("Name", "Source", "Health", "In-flight", "Latency ms", "Balance $", "Checked")
    for s in items:
        table.add_row(
            s.name,
            s.source,
            s.health,
            str(s.in_flight),
            num(round(s.latency_ms) if s.latency_ms is not None else None),
            money(s.balance_usd) if s.balance_usd is not None else "-",
            when(s.balance_checked_at, "%m-%d %H:%M"),
        )
    out.print(table)
    if not url:
        out.print("(configured pool; pass --url for a running gateway's live figures)")


def readable_error(message: str) -> str:
    """An upstream's error body in words: `code: message` from an OpenAI- or Anthropic-shaped
    JSON error, else the text as it came (already cut and with the key masked)."""
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError:
        return message
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return message
    text = error.get("message")
    label = error.get("code") or error.get("type")
    if not isinstance(text, str):
        return message
    return f"{label}: {text}" if isinstance(label, str) and label else text
