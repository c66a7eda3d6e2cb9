"""The `tollway` command's entry point (console script, `python -m tollway`).

`tollway serve` goes straight to the server: typer and the data commands (services, httpx,
rich) take ~0.5 s to import, all of it before the first request could be served.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["serve"]:
        from tollway.app import serve
        from tollway.core.settings import get_settings

        serve(get_settings())
        return
    from tollway.cli.main import app

    app(prog_name="tollway")
