"""How the CLI prints: rich tables for people, `--json` for scripts, errors on stderr."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
STATUS_STYLE = {"active": "green", "disabled": "yellow", "expired": "red"}


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


def when(dt: datetime | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return dt.strftime(fmt) if dt else "-"


def num(v: int | float | None) -> str:
    return "-" if v is None else str(v)


def limit(v: int | float | None) -> str:
    return "unlimited" if v is None else str(v)


def money(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
