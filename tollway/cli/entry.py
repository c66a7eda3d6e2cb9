"""The `tollway` command's entry point (console script, `python -m tollway`).

`tollway serve` goes straight to the server: typer and the data commands (services, httpx,
rich) take ~0.5 s to import, all of it before the first request could be served. Its options
are parsed with argparse; `tollway serve --help` goes through typer like everything else.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["serve"] and not {"--help", "-h"} & set(args):
        from tollway.app import serve
        from tollway.cli import serve_args
        from tollway.core.settings import get_settings

        given = serve_args.parse(args[1:])
        settings = serve_args.with_overrides(get_settings(), given.host, given.port, given.workers)
        problem = serve_args.config_problem(settings)
        if problem is not None:
            sys.exit(f"error: {problem}")
        serve(settings)
        return
    if args == ["--version"]:
        from tollway import __version__

        print(f"tollway {__version__}")
        return
    from tollway.cli.main import app

    app(prog_name="tollway")
