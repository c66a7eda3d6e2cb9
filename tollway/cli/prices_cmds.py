"""`tollway prices list/set/unset/import`: model prices in USD per million tokens."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tollway.cli.backend import run
from tollway.cli.options import AdminSecret, Url
from tollway.cli.output import JsonFlag, fail, money, out, print_json, right, table, when
from tollway.services import price_table
from tollway.services.errors import Invalid

app = typer.Typer(
    name="prices",
    help="Model prices (USD per million tokens): list, set, unset, import.",
    no_args_is_help=True,
)
Rate = Annotated[float, typer.Option(min=0.0, help="USD per million tokens.")]


@app.command("list")
def list_prices(
    as_json: JsonFlag = False, url: Url = None, admin_secret: AdminSecret = None
) -> None:
    """Prices stored in the database. Models without one cost "—" (unknown) in every report."""
    items = run(url, admin_secret, lambda b: b.list_prices())
    if as_json:
        print_json(items)
        return
    rows = table("Model", right("Input"), right("Cached input"), right("Output"), "Updated")
    rows.title = "USD per million tokens"
    for p in items:
        rows.add_row(
            p.model,
            money(p.input_per_mtok),
            money(p.cached_input_per_mtok),
            money(p.output_per_mtok),
            when(p.updated_at, "%Y-%m-%d"),
        )
    out.print(rows)
    out.print(f"{len(items)} price(s)")


@app.command("set")
def set_price(
    model: Annotated[str, typer.Argument(help="The model name clients send.")],
    input_: Annotated[float, typer.Option("--input", min=0.0, help="USD per 1M prompt tokens.")],
    output: Annotated[float, typer.Option(min=0.0, help="USD per 1M completion tokens.")],
    cached_input: Annotated[
        float | None,
        typer.Option(min=0.0, help="USD per 1M cached prompt tokens (default: as input)."),
    ] = None,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Set (or replace) one model's price; gateways use it within a second."""
    data: dict[str, Any] = {
        "model": model,
        "input_per_mtok": input_,
        "output_per_mtok": output,
        "cached_input_per_mtok": cached_input,
    }
    info = run(url, admin_secret, lambda b: b.set_price(data))
    if as_json:
        print_json(info)
        return
    out.print(
        f"{info.model}: input {money(info.input_per_mtok)}, output "
        f"{money(info.output_per_mtok)} per million tokens"
        + (
            f", cached input {money(info.cached_input_per_mtok)}"
            if info.cached_input_per_mtok is not None
            else ""
        )
    )


@app.command("unset")
def unset_price(
    model: Annotated[str, typer.Argument(help="The model name.")],
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Remove a model's price: its cost becomes unknown ("—") again."""
    run(url, admin_secret, lambda b: b.delete_price(model))
    out.print(f"{model}: price removed (cost now unknown unless the config file prices it)")


@app.command("import")
def import_prices(
    file: Annotated[
        Path | None,
        typer.Argument(
            help='A JSON file: {"prices": [{"model", "input_per_mtok", "output_per_mtok"}]} '
            'or a bare list ("-" = stdin).',
            show_default=False,
        ),
    ] = None,
    bundled: Annotated[
        bool, typer.Option("--bundled", help="The dated list-price table shipped with Tollway.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace prices already set (default: keep).")
    ] = False,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Import many prices at once: the bundled table or your own file."""
    if bundled == (file is not None):
        raise typer.BadParameter("give a FILE or --bundled (one of them)")
    chosen = None
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
            chosen = price_table.parse_table(json.loads(text))
        except (OSError, ValueError) as exc:
            message = exc.message if isinstance(exc, Invalid) else str(exc)
            raise fail(f"cannot read {file}: {message}") from None
    result = run(url, admin_secret, lambda b: b.import_prices(chosen, overwrite))
    if as_json:
        print_json(result)
        return
    if bundled:
        table_info = price_table.bundled()
        out.print(f"Bundled list prices as of {table_info.as_of}. {table_info.note}")
    out.print(
        f"{len(result.added)} added, {len(result.replaced)} replaced, "
        f"{len(result.kept)} kept as they were"
        + (" (--overwrite replaces them)" if result.kept else "")
    )
