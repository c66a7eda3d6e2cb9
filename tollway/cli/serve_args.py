"""`tollway serve`'s options, parsed without typer (the fast path in `cli/entry.py`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tollway.core.settings import Settings


def _workers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    """`--host`, `--port`, `--workers`; errors exit 2 as click's do."""
    parser = argparse.ArgumentParser(prog="tollway serve", add_help=False)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=_workers)
    return parser.parse_args(argv)


def with_overrides(
    settings: Settings, host: str | None, port: int | None, workers: int | None
) -> Settings:
    """The options given on the command line win over TOLLWAY_HOST/PORT/WORKERS."""
    given = {"host": host, "port": port, "workers": workers}
    return settings.model_copy(update={k: v for k, v in given.items() if v is not None})


def config_problem(settings: Settings) -> str | None:
    """What is wrong with the upstream file (an unset ${VAR}, a typo), checked before the
    server starts so it is one line instead of a start-up traceback."""
    from tollway.upstreams.config import ConfigError, read_config

    path = settings.config_path()
    if path is None:
        return None
    try:
        read_config(path)
    except ConfigError as exc:
        return str(exc)
    return None
