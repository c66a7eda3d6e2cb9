"""How the CLI prints: rich tables for people, `--json` for scripts, errors on stderr."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from tollway.core import fmt

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
STATUS_STYLE = {
    "active": "green",
    "disabled": "yellow",
    "expired": "red",
    "exhausted": "red",
    "limited": "magenta",
}


def table(*columns: str | Column, title: str | None = None) -> Table:
    """The one table style of every command: a rule under the header, no outer box."""
    return Table(*columns, title=title, box=box.SIMPLE_HEAD, title_justify="left")


def right(header: str) -> Column:
    """A numeric column: right-aligned, never wrapped."""
    return Column(header, justify="right", no_wrap=True)


def print_json(data: BaseModel | list[Any] | dict[str, Any]) -> None:
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    elif isinstance(data, list):
        payload = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    else:
        payload = data
    typer.echo(json.dumps(payload, indent=2))


def fail(message: str) -> typer.Exit:
    """Print an error and return the exit to raise: `raise fail("...")`."""
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(1)


def when(dt: datetime | None, pattern: str = "%Y-%m-%d %H:%M UTC") -> str:
    return dt.strftime(pattern) if dt else fmt.UNKNOWN


def num(v: int | float | None) -> str:
    """12,345; "—" when unknown."""
    return fmt.count(v)


def limit(v: int | float | None) -> str:
    return "unlimited" if v is None else fmt.count(v)


def money(v: float | None) -> str:
    """$0.00012, $1,234.50; "—" when unknown (never $0)."""
    return fmt.usd(v)


def money_total(v: float | None, requests: int) -> str:
    """A summed cost: "—" when none of its requests had a price."""
    return fmt.usd_total(v, requests)
