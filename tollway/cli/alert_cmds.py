"""`tollway alerts list/add/enable/disable/remove/test/recent`: webhooks for budget,
expiry and upstream alerts (a thin face over tollway.services.alerts)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tollway.cli.backend import run
from tollway.cli.options import AdminSecret, Url
from tollway.cli.output import JsonFlag, out, print_json, when
from tollway.services.alerts import KINDS

app = typer.Typer(
    name="alerts",
    help="Alert webhooks (budget thresholds, key expiry, upstream down or out of credit).",
    no_args_is_help=True,
)
WebhookId = Annotated[int, typer.Argument(min=1, help="The webhook's numeric id.")]


def _kinds(text: str | None) -> list[str] | None:
    if text is None or text.strip() in ("", "all"):
        return None
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise typer.BadParameter(f"unknown kind {bad[0]!r}; use {', '.join(KINDS)}")
    return kinds


@app.command("list")
def list_webhooks(
    as_json: JsonFlag = False, url: Url = None, admin_secret: AdminSecret = None
) -> None:
    """Webhooks (URLs shown as scheme and host only: a Slack URL is a secret)."""
    items = run(url, admin_secret, lambda b: b.list_webhooks())
    if as_json:
        print_json(items)
        return
    table = Table("ID", "Name", "URL", "Kinds", "Enabled")
    for w in items:
        kinds = ", ".join(w.kinds) if w.kinds is not None else "all"
        table.add_row(str(w.id), w.name, w.url_hint, kinds, "yes" if w.enabled else "no")
    out.print(table)
    out.print(f"{len(items)} webhook(s)")


@app.command("add")
def add_webhook(
    name: Annotated[str, typer.Option("--name", "-n", help="A unique name.")],
    webhook_url: Annotated[
        str, typer.Option("--webhook-url", help="Where to POST, e.g. a Slack incoming webhook.")
    ],
    kinds: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated kinds ({', '.join(KINDS)}); default all."),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(help="The HMAC signing secret (16+ characters); default generated."),
    ] = None,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Add a webhook; prints its signing secret once."""
    data = {"name": name, "url": webhook_url, "kinds": _kinds(kinds), "secret": secret}
    created = run(url, admin_secret, lambda b: b.add_webhook(data))
    if as_json:
        print_json(created)
        return
    out.print(f"Added webhook {created.info.id} ({created.info.name}).")
    out.print(f"Signing secret (shown only now): {created.secret}")


def _set_enabled(webhook_id: int, enabled: bool, url: str | None, secret: str | None) -> None:
    info = run(url, secret, lambda b: b.update_webhook(webhook_id, {"enabled": enabled}))
    out.print(f"Webhook {info.id} ({info.name}) {'enabled' if enabled else 'disabled'}.")


@app.command("enable")
def enable(webhook_id: WebhookId, url: Url = None, admin_secret: AdminSecret = None) -> None:
    """Send alerts to this webhook again."""
    _set_enabled(webhook_id, True, url, admin_secret)


@app.command("disable")
def disable(webhook_id: WebhookId, url: Url = None, admin_secret: AdminSecret = None) -> None:
    """Stop sending alerts to this webhook (kept, can be enabled again)."""
    _set_enabled(webhook_id, False, url, admin_secret)


@app.command("remove")
def remove(webhook_id: WebhookId, url: Url = None, admin_secret: AdminSecret = None) -> None:
    """Remove a webhook."""
    run(url, admin_secret, lambda b: b.remove_webhook(webhook_id))
    out.print(f"Removed webhook {webhook_id}.")


@app.command("test")
def test(webhook_id: WebhookId, url: Url = None, admin_secret: AdminSecret = None) -> None:
    """Send one signed test alert; exit 1 if the webhook did not take it."""
    result = run(url, admin_secret, lambda b: b.test_webhook(webhook_id))
    if not result.ok:
        out.print(f"Webhook {webhook_id} did not take the test alert: {result.error}")
        raise typer.Exit(1)
    out.print(f"Webhook {webhook_id} took the test alert.")


@app.command("recent")
def recent(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many.")] = 20,
    as_json: JsonFlag = False,
    url: Url = None,
    admin_secret: AdminSecret = None,
) -> None:
    """Alerts raised, newest first, with their delivery."""
    items = run(url, admin_secret, lambda b: b.recent_alerts(limit))
    if as_json:
        print_json(items)
        return
    table = Table("ID", "When", "Kind", "Alert", "Delivered", "Failed")
    for a in items:
        table.add_row(
            str(a.id),
            when(a.created_at),
            a.kind,
            a.text,
            str(a.delivered),
            str(a.failed) + (f" ({a.last_error})" if a.last_error else ""),
        )
    out.print(table)
