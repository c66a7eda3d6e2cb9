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
from tollway.cli.output import (
    STATUS_STYLE,
    JsonFlag,
    money,
    money_total,
    num,
    out,
    print_json,
    right,
    table,
    when,
)
from tollway.services import keys, usage

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
    rows = table("Name", right("Requests"), right("Errors"), right("Tokens"), right("Cost"))
    rows.title = title
    for g in groups:
        rows.add_row(
            g.name or "(none)",
            num(g.requests),
            num(g.errors),
            num(g.total_tokens),
            money_total(g.cost_usd, g.requests),
        )
    return rows


def _totals_line(t: usage.UsageTotals) -> str:
    return (
        f"Requests: {num(t.requests)} (errors: {num(t.errors)})   "
        f"Tokens: {num(t.total_tokens)} (prompt {num(t.prompt_tokens)}, "
        f"completion {num(t.completion_tokens)})   Cost: {money_total(t.cost_usd, t.requests)}"
    )


def _limits_table(info: keys.KeyInfo) -> Table:
    """Each limit of the key, what it has used and what remains (budget and quota exact,
    per-minute windows from the last 60 s of requests)."""
    s = info.summary
    rows = table("Limit", right("Allowed"), right("Used"), right("Left"))
    rows.title = "Limits"
    if s is None:
        return rows
    if info.budget_usd is not None:
        period = "" if info.budget_period == "none" else f" ({info.budget_period})"
        rows.add_row(
            f"Budget{period}",
            money(info.budget_usd),
            money(s.spent_usd),
            money(s.budget_left_usd),
        )
    if info.token_quota is not None:
        rows.add_row("Token quota", num(info.token_quota), num(s.tokens_used), num(s.tokens_left))
    for name, allowed, used in (
        ("Requests per minute", info.rpm, s.requests_last_minute),
        ("Tokens per minute", info.tpm, s.tokens_last_minute),
    ):
        if allowed is not None:
            rows.add_row(name, num(allowed), num(used), num(max(0, allowed - used)))
    for name, allowed in (
        ("Requests per day", info.rpd),
        ("Tokens per day", info.tpd),
        ("Parallel requests", info.max_parallel),
    ):
        if allowed is not None:
            rows.add_row(name, num(allowed), "—", "—")
    if not rows.row_count:
        rows.add_row("(no limits)", "unlimited", "", "")
    return rows


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

    async def both(b: Backend) -> tuple[usage.KeyStats, keys.KeyInfo]:
        return await b.key_stats(key_id, recent=recent, **span), await b.get_key(key_id)

    stats, info = run(url, admin_secret, both)
    if as_json:
        print_json({**stats.model_dump(mode="json"), "key": info.model_dump(mode="json")})
        return
    badge = info.summary.badge if info.summary else info.status
    style = STATUS_STYLE[badge]
    out.print(f"[bold]Key {stats.key_id} ({stats.name})[/bold]  [{style}]{badge}[/{style}]")
    for reason in info.summary.reasons if info.summary else []:
        out.print(f"  {reason}")
    if info.summary is not None:
        out.print(f"Requests today (UTC): {num(info.summary.requests_today)}")
    out.print(_limits_table(info))
    out.print(_totals_line(stats.totals))
    out.print(_groups_table("By endpoint", stats.by_endpoint))
    out.print(_groups_table("By model", stats.by_model))
    recent_rows = table(
        "Time", "Model", right("Status"), right("Tokens"), right("Cost"), right("ms")
    )
    recent_rows.title = "Recent"
    for r in stats.recent:
        recent_rows.add_row(
            when(r.ts, "%Y-%m-%d %H:%M:%S"),
            r.model or "—",
            str(r.status),
            num(r.total_tokens),
            money(r.cost_usd),
            num(round(r.latency_ms) if r.latency_ms is not None else None),
        )
    out.print(recent_rows)


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
    series = table(
        "Bucket",
        right("Requests"),
        right("Errors"),
        right("Tokens"),
        right("Cost"),
        right("Avg ms"),
    )
    series.title = f"By {rep.bucket} (buckets without requests left out)"
    for p in rep.series:
        if not p.requests:
            continue
        series.add_row(
            p.bucket.strftime(fmt),
            num(p.requests),
            num(p.errors),
            num(p.total_tokens),
            money_total(p.cost_usd, p.requests),
            num(round(p.avg_latency_ms) if p.avg_latency_ms else None),
        )
    out.print(series)
    top = table(
        right("Key"), "Name", right("Requests"), right("Errors"), right("Tokens"), right("Cost")
    )
    top.title = "Top keys"
    for k in rep.by_key:
        top.add_row(
            str(k.key_id) if k.key_id else "—",
            k.name or ("(no key)" if not k.key_id else "(deleted)"),
            num(k.requests),
            num(k.errors),
            num(k.total_tokens),
            money_total(k.cost_usd, k.requests),
        )
    out.print(top)
    out.print(_groups_table("Top models", rep.by_model))
    out.print(_groups_table("Top upstreams", rep.by_upstream))
    out.print(_groups_table("Top endpoints", rep.by_endpoint))
