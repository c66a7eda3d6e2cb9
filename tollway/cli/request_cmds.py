"""`tollway usage show <request-id>`: one request in full (a thin face over
services.usage.get_record), and the `usage` command group that holds it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tollway.cli.backend import run
from tollway.cli.options import AdminSecret, Url
from tollway.cli.output import JsonFlag, money, num, out, print_json, when
from tollway.cli.usage_cmds import usage_report
from tollway.services import usage

app = typer.Typer(name="usage", add_completion=False)
app.callback(invoke_without_command=True)(usage_report)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


@app.command("show")
def show(
    request_id: Annotated[str, typer.Argument(help="The request's id (its x-request-id).")],
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """One request: timing, every failed attempt, error message, tokens, cost, fallback."""
    rec = run(url, admin_secret, lambda b: b.get_record(request_id))
    if as_json:
        print_json(rec)
        return
    print_detail(rec)


def print_detail(rec: usage.RequestDetail) -> None:
    key = "-" if rec.key_id is None else f"{rec.key_name or '(deleted)'} (id {rec.key_id})"
    lines = [
        ("Request", rec.request_id),
        ("Time", when(rec.ts, "%Y-%m-%d %H:%M:%S UTC")),
        ("Call", f"{rec.method} {rec.endpoint}" + (" (stream)" if rec.stream else "")),
        ("Key", key),
        ("Status", str(rec.status) + (f" {rec.error_type}" if rec.error_type else "")),
        ("Error", rec.error_message or "-"),
        ("Model", rec.model or "-"),
        ("Fallback from", rec.fallback_from or "-"),
        ("Upstream", f"{rec.upstream or '-'} ({rec.upstream_model or '-'})"),
        ("Attempts", str(rec.attempts)),
        ("Limits admitted", _ms(rec.admitted_ms)),
        ("Upstream first byte", _ms(rec.first_byte_ms)),
        ("First token", _ms(rec.ttft_ms)),
        ("Total", _ms(rec.latency_ms)),
        ("Tokens", f"{num(rec.prompt_tokens)} in / {num(rec.completion_tokens)} out"),
        ("Cost (USD)", money(rec.cost_usd)),
    ]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        out.print(f"{label:<{width}}  {escape(value)}")
    if rec.failed_attempts:
        table = Table("#", "Upstream", "Model", "Outcome", title="Failed attempts")
        for i, a in enumerate(rec.failed_attempts, 1):
            table.add_row(str(i), a.upstream or "-", a.model or "-", a.outcome)
        out.print(table)
