"""The `tollway` command: a thin face over tollway.services (no logic of its own).

Every data command works on the configured database, or on a running Tollway through its
admin API with `--url` and the admin secret; every one that prints data has `--json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from tollway import __version__
from tollway.cli import (
    alert_cmds,
    keys_cmds,
    prices_cmds,
    request_cmds,
    secret_cmds,
    upstream_cmds,
    usage_cmds,
)
from tollway.cli.backend import Local, run_local, sqlite_file
from tollway.cli.output import fail, out
from tollway.core.settings import get_settings
from tollway.services.admin_secret import (
    MIN_LENGTH,
    configured_secret,
    ensure_admin_secret,
    reset_admin_secret,
)
from tollway.store.db import is_sqlite, migrate

app = typer.Typer(
    name="tollway",
    help="Tollway: a self-hosted, OpenAI-compatible LLM gateway.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tollway {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Tollway: a self-hosted, OpenAI-compatible LLM gateway."""


def _where(url: str) -> str:
    parsed = make_url(url)
    if is_sqlite(url) and parsed.database:
        return str(Path(parsed.database).resolve())
    return parsed.render_as_string(hide_password=True)


# --- server -----------------------------------------------------------------------------------


@app.command()
def init(
    reset_admin: Annotated[
        bool,
        typer.Option("--reset-admin-secret", help="Replace the stored admin secret."),
    ] = False,
) -> None:
    """Create the database or bring its schema up to date; create the admin secret and the
    server secret once."""
    settings = get_settings()
    path = sqlite_file(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)

    async def work(local: Local) -> str | None:
        await migrate(local.engine)
        if reset_admin and configured_secret(settings) is None:
            return await reset_admin_secret(local.engine)
        return await ensure_admin_secret(local.engine, settings)

    secret = run_local(work, creating=True)
    out.print(f"Database ready: {_where(settings.database_url)}")
    secret_cmds.init_server_secret(settings)
    if secret is not None:
        out.print("Admin secret (for the admin API, the web UI and `--url`):")
        typer.echo(f"\n    {secret}\n")  # plain echo: never wrapped or styled, easy to copy
        out.print(
            "[yellow]warning:[/yellow] it is shown only this once and stored only as a hash. "
            "Store it now; `tollway init --reset-admin-secret` makes a new one."
        )
    elif (configured := configured_secret(settings)) is not None:
        out.print("Admin secret: TOLLWAY_ADMIN_SECRET (nothing stored).")
        if len(configured) < MIN_LENGTH:
            raise fail(
                f"TOLLWAY_ADMIN_SECRET is shorter than {MIN_LENGTH} characters: the admin API "
                "and UI stay off until it is longer"
            )
    else:
        out.print("Admin secret: already set (stored hashed; --reset-admin-secret replaces it).")


@app.command("migrate")
def migrate_cmd() -> None:
    """Bring the database schema up to date and exit (a one-off job before an upgrade).

    Safe while instances start: one process migrates at a time, the others wait."""
    settings = get_settings()
    path = sqlite_file(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)

    async def work(local: Local) -> None:
        await migrate(local.engine)

    run_local(work, creating=True)
    out.print(f"Database schema up to date: {_where(settings.database_url)}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (TOLLWAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (TOLLWAY_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (TOLLWAY_WORKERS).")
    ] = None,
) -> None:
    """Run the gateway (options override the TOLLWAY_* settings)."""
    from tollway.app import serve as serve_app  # lazy: the CLI must not load the server stack
    from tollway.cli.serve_args import with_overrides

    serve_app(with_overrides(get_settings(), host, port, workers))


# --- keys, usage, upstreams -------------------------------------------------------------------

app.command("create-key")(keys_cmds.create_key)
app.command("list-keys")(keys_cmds.list_keys)
app.command("get-key")(keys_cmds.get_key)
app.command("update-key")(keys_cmds.update_key)
app.command("enable-key")(keys_cmds.enable_key)
app.command("disable-key")(keys_cmds.disable_key)
app.command("rotate-key")(keys_cmds.rotate_key)
app.command("delete-key")(keys_cmds.delete_key)
app.command("key-stats")(usage_cmds.key_stats)
app.add_typer(request_cmds.app)  # `usage` (the report) and `usage show <request-id>`
app.add_typer(upstream_cmds.app)
app.add_typer(prices_cmds.app)
app.add_typer(alert_cmds.app)
app.command("logout-everywhere")(secret_cmds.logout_everywhere)
app.command("rotate-secret")(secret_cmds.rotate_secret)
