"""docs/reference/cli.md from the typer app: each command's `--help` text."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from docsgen.common import banner

WIDTH = "100"  # help text wraps the same on every machine


def _commands(group: Any, ctx: Any) -> Iterator[str]:
    """Every command's path, depth first (typer vendors click: duck-typed on purpose)."""
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        yield f"{ctx.command_path} {name}"
        if hasattr(cmd, "list_commands"):
            yield from _commands(cmd, cmd.context_class(cmd, info_name=name, parent=ctx))


def _help(path: str) -> str:
    """`tollway ... --help` as a terminal 100 columns wide shows it, without colours."""
    from typer.testing import CliRunner

    from tollway.cli.main import app

    env = {"COLUMNS": WIDTH, "TERMINAL_WIDTH": WIDTH, "NO_COLOR": "1", "TERM": "dumb"}
    args = [*path.split()[1:], "--help"]
    result = CliRunner().invoke(app, args, prog_name="tollway", env=env, color=False)
    if result.exit_code != 0:
        raise RuntimeError(f"`{path} --help` exited {result.exit_code}: {result.output}")
    lines = [line.rstrip() for line in result.output.splitlines()]
    return "\n".join(lines).strip("\n")


def render() -> str:
    import typer

    from tollway.cli.main import app

    os.environ.setdefault("COLUMNS", WIDTH)
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="tollway")
    out = [
        banner("the typer app `tollway.cli.main.app` (each command's `--help`)"),
        "# Command line",
        "",
        "Every data command works on the configured database (`TOLLWAY_DATABASE_URL`), or on a",
        "running Tollway with `--url` and `--admin-secret` (or `TOLLWAY_URL` /",
        "`TOLLWAY_ADMIN_SECRET`). Errors print `error: ...` and exit 1; bad options exit 2.",
        "",
        "## tollway",
        "",
        "```text",
        _help("tollway"),
        "```",
    ]
    for path in _commands(root, ctx):
        out += ["", f"## {path}", "", "```text", _help(path), "```"]
    return "\n".join(out) + "\n"
