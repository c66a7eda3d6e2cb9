"""The `tollway` command: a thin face over tollway.services (no logic of its own)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Column, Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.settings import get_settings
from tollway.services import keys, usage
from tollway.services.errors import ServiceError
from tollway.store.db import create_engine, is_sqlite, migrate
from tollway.store.queries import utcnow

app = typer.Typer(
    name="tollway",
    help="Tollway: a self-hosted, OpenAI-compatible LLM gateway.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
KeyId = Annotated[int, typer.Argument(help="The key's numeric id.")]


def _sqlite_file(url: str) -> Path | None:
    db = make_url(url).database if is_sqlite(url) else None
    return Path(db) if db and db != ":memory:" else None


def _run(work: Callable[[AsyncEngine], Awaitable[T]], *, creating: bool = False) -> T:
    """Run one async job on a fresh engine; map service/database errors to exit code 1."""
    url = get_settings().database_url
    path = _sqlite_file(url)
    if path is not None and not creating and not path.exists():
        # Opening would silently create an empty file; point at `init` instead.
        err.print(f"[red]error:[/red] no database at {path.resolve()}; run `tollway init` first")
        raise typer.Exit(1)

    async def main() -> T:
        engine = create_engine(url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ServiceError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        err.print(f"[red]database error:[/red] {reason} (has `tollway init` been run?)")
        raise typer.Exit(1) from None


def _where(url: str) -> str:
    parsed = make_url(url)
    if is_sqlite(url) and parsed.database:
        return str(Path(parsed.database).resolve())
    return parsed.render_as_string(hide_password=True)


def _json(data: BaseModel | dict[str, Any]) -> None:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    typer.echo(json.dumps(payload, indent=2))


def _when(dt: datetime | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return dt.strftime(fmt) if dt else "-"


def _num(v: int | float | None) -> str:
    return "-" if v is None else str(v)


STATUS_STYLE = {"active": "green", "disabled": "yellow", "expired": "red"}


# --- server -----------------------------------------------------------------------------------


@app.command()
def init() -> None:
    """Create the database or bring its schema up to date."""
    url = get_settings().database_url
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    _run(migrate, creating=True)
    out.print(f"Database ready: {_where(url)}")


@app.command()
def serve() -> None:
    """Run the gateway (host, port and workers from TOLLWAY_* settings)."""
    from tollway.app import serve as serve_app  # lazy: the CLI must not load the server stack

    serve_app(get_settings())


# --- keys -------------------------------------------------------------------------------------


@app.command("create-key")
def create_key(
    name: Annotated[str, typer.Option("--name", "-n", help="A name for the key.")],
    email: Annotated[str | None, typer.Option(help="Owner's email.")] = None,
    rate_limit: Annotated[
        int, typer.Option("--rate-limit", "-r", min=0, help="Requests per minute; 0 = unlimited.")
    ] = 0,
    expires: Annotated[
        int | None, typer.Option("--expires", "-e", min=1, help="Days until the key expires.")
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated allowed models (default: all).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a client key. The key is printed once and cannot be shown again."""
    data: dict[str, Any] = {"name": name, "email": email, "rpm": rate_limit or None}
    if expires is not None:
        data["expires_at"] = utcnow() + timedelta(days=expires)
    if models is not None:
        data["models"] = models.split(",")
    created = _run(lambda engine: keys.create_key(engine, data))
    _show_secret(created, as_json, "Created")


def _show_secret(created: keys.CreatedKey, as_json: bool, verb: str) -> None:
    warning = "This key is shown only once. Store it now: it cannot be recovered."
    if as_json:
        _json({"key": created.key, **created.info.model_dump(mode="json")})
        err.print(f"[yellow]warning:[/yellow] {warning}")
        return
    out.print(f"{verb} key [bold]{created.info.id}[/bold] ({created.info.name}):")
    typer.echo(f"\n    {created.key}\n")  # plain echo: never wrapped or styled, easy to copy
    out.print(f"[yellow]warning:[/yellow] {warning}")


@app.command("list-keys")
def list_keys(
    search: Annotated[str | None, typer.Option("--search", "-s", help="Name/email/prefix.")] = None,
    status: Annotated[str | None, typer.Option(help="active, disabled or expired.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=keys.MAX_PAGE)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List client keys, newest first."""
    page = _run(
        lambda engine: keys.list_keys(
            engine, offset=offset, limit=limit, search=search, status=status
        )
    )
    if as_json:
        _json(page)
        return
    # Fits 80 columns: only the name may wrap; get-key shows everything else.
    table = Table(
        "ID",
        "Name",
        Column("Prefix", no_wrap=True),
        Column("Status", no_wrap=True),
        Column("RPM", no_wrap=True),
        Column("Expires", no_wrap=True),
        Column("Last used", no_wrap=True),
        box=box.SIMPLE_HEAD,
    )
    for k in page.items:
        style = STATUS_STYLE[k.status]
        table.add_row(
            str(k.id),
            k.name,
            k.prefix,
            f"[{style}]{k.status}[/{style}]",
            _num(k.rpm),
            _when(k.expires_at, "%Y-%m-%d"),
            _when(k.last_used_at, "%Y-%m-%d"),
        )
    out.print(table)
    out.print(f"{len(page.items)} of {page.total} key(s)")


@app.command("get-key")
def get_key(key_id: KeyId, as_json: JsonFlag = False) -> None:
    """Show one key's details (never its secret)."""
    info = _run(lambda engine: keys.get_key(engine, key_id))
    if as_json:
        _json(info)
        return
    table = Table("Field", "Value", show_header=False)
    for field, value in info.model_dump().items():
        if isinstance(value, datetime) or value is None:
            text = _when(value)
        elif isinstance(value, list):
            text = ", ".join(value) or "(none)"
        else:
            text = str(value)
        table.add_row(field, text)
    out.print(table)


@app.command("enable-key")
def enable_key(key_id: KeyId) -> None:
    """Enable a key."""
    info = _run(lambda engine: keys.enable_key(engine, key_id))
    out.print(f"Key {info.id} ({info.name}) is {info.status}.")


@app.command("disable-key")
def disable_key(key_id: KeyId) -> None:
    """Disable a key; requests with it are refused within a second."""
    info = _run(lambda engine: keys.disable_key(engine, key_id))
    out.print(f"Key {info.id} ({info.name}) is {info.status}.")


@app.command("rotate-key")
def rotate_key(key_id: KeyId, as_json: JsonFlag = False) -> None:
    """Replace a key's secret; limits and usage history stay, the old secret stops working."""
    created = _run(lambda engine: keys.rotate_key(engine, key_id))
    _show_secret(created, as_json, "Rotated")


@app.command("delete-key")
def delete_key(
    key_id: KeyId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a key for good (its usage rows are kept, unlinked)."""
    if not yes:
        typer.confirm(f"Delete key {key_id}?", abort=True)
    _run(lambda engine: keys.delete_key(engine, key_id))
    out.print(f"Key {key_id} deleted.")


# --- usage ------------------------------------------------------------------------------------


@app.command("key-stats")
def key_stats(
    key_id: KeyId,
    recent: Annotated[int, typer.Option(min=0, help="How many recent requests to show.")] = 10,
    as_json: JsonFlag = False,
) -> None:
    """Usage of one key: totals, by endpoint, by model, recent requests."""
    stats = _run(lambda engine: usage.key_stats(engine, key_id, recent))
    if as_json:
        _json(stats)
        return
    t = stats.totals
    out.print(f"[bold]Key {stats.key_id} ({stats.name})[/bold]")
    out.print(
        f"Requests: {t.requests} (errors: {t.errors})   Tokens: {t.total_tokens} "
        f"(prompt {t.prompt_tokens}, completion {t.completion_tokens})   Cost: ${t.cost_usd:.4f}"
    )
    for title, groups in (("By endpoint", stats.by_endpoint), ("By model", stats.by_model)):
        table = Table("Name", "Requests", "Errors", "Tokens", "Cost (USD)", title=title)
        for g in groups:
            table.add_row(
                g.name or "(none)",
                str(g.requests),
                str(g.errors),
                str(g.total_tokens),
                f"{g.cost_usd:.4f}",
            )
        out.print(table)
    table = Table("Time", "Method", "Endpoint", "Model", "Status", "Tokens", "ms", title="Recent")
    for r in stats.recent:
        table.add_row(
            _when(r.ts),
            r.method,
            r.endpoint,
            r.model or "-",
            str(r.status),
            _num(r.total_tokens),
            _num(round(r.latency_ms) if r.latency_ms is not None else None),
        )
    out.print(table)
