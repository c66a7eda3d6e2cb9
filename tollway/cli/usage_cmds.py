"""Usage commands: key-stats (as in the seed) and usage (a report over a range, or CSV)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tollway.cli.backend import Backend, run
from tollway.cli.options import AdminSecret, KeyId, Url, parse_span
from tollway.cli.output import JsonFlag, money, num, out, print_json, when
from tollway.services import usage

Start = Annotated[
    datetime | None,
    typer.Option(
        help="Range start, UTC (e.g. 2026-05-01 or 2026-05-01T08:00:00).", show_default=False
    ),
]
End = Annotated[
    datetime | None,
    typer.Option(help="Range end, UTC, exclusive (default: now).", show_default=False),
]
Last = Annotated[
    str | None,
    typer.Option(
        "--last", help="Instead of --start: the last 90m, 24h, 7d, 2w...", show_default=False
    ),
]


def _utc(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _range(start: datetime | None, end: datetime | None, last: str | None) -> dict[str, Any]:
    start, end = _utc(start), _utc(end)
    if last is not None:
        if start is not None:
            raise typer.BadParameter("give --start or --last, not both", param_hint="--last")
        start = (end or datetime.now(UTC)) - parse_span(last)
    return {"start": start, "end": end}


def _groups_table(title: str, groups: list[usage.UsageGroup]) -> Table:
    table = Table("Name", "Requests", "Errors", "Tokens", "Cost (USD)", title=title)
    for g in groups:
        table.add_row(
            g.name or "(none)",
            str(g.requests),
            str(g.errors),
            str(g.total_tokens),
            money(g.cost_usd),
        )
    return table


def _totals_line(t: usage.UsageTotals) -> str:
    return (
        f"Requests: {t.requests} (errors: {t.errors})   Tokens: {t.total_tokens} "
        f"(prompt {t.prompt_tokens}, completion {t.completion_tokens})   Cost: ${t.cost_usd:.4f}"
    )


def key_stats(
    key_id: KeyId,
    recent: Annotated[
        int, typer.Option(min=0, max=1000, help="How many recent requests to show.")
    ] = 10,
    start: Start = None,
    end: End = None,
    last: Last = None,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Usage of one key: totals, by endpoint, by model, recent requests (all time by default)."""
    span = _range(start, end, last)
    stats = run(url, admin_secret, lambda b: b.key_stats(key_id, recent=recent, **span))
    if as_json:
        print_json(stats)
        return
    out.print(f"[bold]Key {stats.key_id} ({stats.name})[/bold]")
    out.print(_totals_line(stats.totals))
    out.print(_groups_table("By endpoint", stats.by_endpoint))
    out.print(_groups_table("By model", stats.by_model))
    table = Table("Time", "Method", "Endpoint", "Model", "Status", "Tokens", "ms", title="Recent")
    for r in stats.recent:
        table.add_row(
            when(r.ts),
            r.method,
            r.endpoint,
            r.model or "-",
            str(r.status),
            num(r.total_tokens),
            num(round(r.latency_ms) if r.latency_ms is not None else None),
        )
    out.print(table)


def usage_report(
    ctx: typer.Context,
    start: Start = None,
    end: End = None,
    last: Last = None,
    bucket: Annotated[str, typer.Option(help="Series points: hour or day.")] = "day",
    key: Annotated[int | None, typer.Option("--key", min=0, help="Only this key id.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    upstream: Annotated[str | None, typer.Option(help="Only this upstream.")] = None,
    top: Annotated[int, typer.Option(min=1, max=1000, help="Rows per breakdown.")] = 10,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Write the raw records of the range as CSV to this file "
            '("-" = stdout) instead of the report.',
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """A usage report over a range: totals, a time series, top keys/models/upstreams/endpoints.
    Default range: the last 30 days (or 24 hours with --bucket hour).
    `tollway usage show <request-id>` shows one request in full."""
    if ctx.invoked_subcommand is not None:
        return
    if bucket not in usage.BUCKETS:
        raise typer.BadParameter("must be hour or day", param_hint="--bucket")
    span = _range(start, end, last)
    filters = {"key_id": key, "model": model, "upstream": upstream}
    if csv is not None:
        rows = run(url, admin_secret, lambda b: _write_csv(b, csv, **span, **filters))
        if str(csv) != "-":
            out.print(f"Wrote {rows} record(s) to {csv}")
        return
    rep = run(url, admin_secret, lambda b: b.report(**span, **filters, bucket=bucket, top=top))
    if as_json:
        print_json(rep)
        return
    _print_report(rep)


async def _write_csv(backend: Backend, path: Path, **query: Any) -> int:
    chunks = await backend.export_csv(**query)
    lines = 0
    sink = sys.stdout if str(path) == "-" else path.open("w", encoding="utf-8", newline="")
    try:
        async for chunk in chunks:
            sink.write(chunk)
            lines += chunk.count("\n")
    finally:
        if sink is not sys.stdout:
            sink.close()
    return max(lines - 1, 0)  # minus the header


def _print_report(rep: usage.UsageReport) -> None:
    fmt = "%Y-%m-%d %H:%M" if rep.bucket == "hour" else "%Y-%m-%d"
    scope = ", ".join(
        f"{k} {v}"
        for k, v in (("key", rep.key_id), ("model", rep.model), ("upstream", rep.upstream))
        if v is not None
    )
    out.print(
        f"[bold]Usage {rep.start.strftime('%Y-%m-%d %H:%M')} to "
        f"{rep.end.strftime('%Y-%m-%d %H:%M')} UTC[/bold]" + (f" ({scope})" if scope else "")
    )
    out.print(_totals_line(rep.totals))
    series = Table(
        "Bucket", "Requests", "Errors", "Tokens", "Cost (USD)", "Avg ms", title=f"By {rep.bucket}"
    )
    for p in rep.series:
        series.add_row(
            p.bucket.strftime(fmt),
            str(p.requests),
            str(p.errors),
            str(p.total_tokens),
            money(p.cost_usd),
            num(round(p.avg_latency_ms) if p.avg_latency_ms else None),
        )
    out.print(series)
    keys = Table("Key", "Name", "Requests", "Errors", "Tokens", "Cost (USD)", title="Top keys")
    for k in rep.by_key:
        keys.add_row(
            str(k.key_id) if k.key_id else "-",
            k.name or ("(no key)" if not k.key_id else "(deleted)"),
            str(k.requests),
            str(k.errors),
            str(k.total_tokens),
            money(k.cost_usd),
        )
    out.print(keys)
    out.print(_groups_table("Top models", rep.by_model))
    out.print(_groups_table("Top upstreams", rep.by_upstream))
    out.print(_groups_table("Top endpoints", rep.by_endpoint))
