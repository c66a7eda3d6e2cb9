"""The server secret (`tollway init` creates it, `tollway rotate-secret` replaces it) and
`tollway logout-everywhere`."""

from __future__ import annotations

import contextlib
import os
from typing import Annotated

import typer

from tollway.cli.backend import Local, run, run_local
from tollway.cli.options import AdminSecret, Url
from tollway.cli.output import fail, out
from tollway.core.server_secret import (
    BadSecretFile,
    configured,
    ensure_server_secret,
    new_secret,
    secret_path,
    server_secret,
    write_secret_file,
)
from tollway.core.settings import Settings, get_settings


def init_server_secret(settings: Settings) -> None:
    """`tollway init`'s part: create the secret file once, unless TOLLWAY_SECRET_KEY is set."""
    try:
        created = ensure_server_secret(settings)
        server_secret(settings)  # an existing file must be private
    except BadSecretFile as exc:
        raise fail(str(exc)) from None
    if configured(settings) is not None:
        out.print("Server secret: TOLLWAY_SECRET_KEY (nothing stored).")
    elif created is not None:
        out.print(
            f"Server secret: created {created.resolve()} (mode 0600). It encrypts upstream keys "
            "and signs web sessions; keep it out of database backups. Instances sharing this "
            "database need the same one (TOLLWAY_SECRET_KEY)."
        )
    elif (path := secret_path(settings)) is not None:
        out.print(f"Server secret: {path.resolve()}")


def logout_everywhere(url: Url = None, admin_secret: AdminSecret = None) -> None:
    """End every web UI session, on every browser and instance (copied cookies included)."""
    generation = run(url, admin_secret, lambda b: b.revoke_sessions())
    out.print(f"Every UI session ended (session generation {generation}).")


def rotate_secret(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Make a new server secret and re-encrypt every stored upstream key with it.

    Stop every instance first; start them again with the new secret. Web sessions end."""
    from tollway.services.secret_rotation import reencrypt_upstream_keys
    from tollway.upstreams.crypto import SecretBox, secret_box

    settings = get_settings()
    from_env = configured(settings) is not None
    path = None if from_env else secret_path(settings)
    if not from_env and path is None:
        raise fail("an in-memory database has no server secret to rotate")
    if not yes:
        typer.confirm("Re-encrypt every stored upstream key with a new server secret?", abort=True)
    secret = new_secret()
    staged = None
    if path is not None:
        # Written before the database changes: if anything stops half-way, the secret the
        # rows are encrypted with is still on disk (here, or at `path`).
        staged = path.with_name(path.name + ".new")
        write_secret_file(staged, secret, replace=True)

    async def work(local: Local) -> int:
        old = secret_box(settings, reading=True)
        return await reencrypt_upstream_keys(local.engine, old, SecretBox(secret.encode()))

    try:
        count = run_local(work)
    except BaseException:
        if staged is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
        raise
    out.print(f"Re-encrypted {count} upstream key(s).")
    if staged is not None and path is not None:
        os.replace(staged, path)
        out.print(f"New server secret in {path.resolve()}: restart every instance.")
    else:
        out.print("New server secret (set TOLLWAY_SECRET_KEY to it on every instance, restart):")
        typer.echo(f"\n    {secret}\n")
