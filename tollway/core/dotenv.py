"""Values of the `.env` file the settings read, for `${VAR}` in tollway.yaml.

A real environment variable always wins; `.env` only fills in names the environment lacks, so
`.env.example`'s upstream keys work from `.env` as they do from `export`."""

from __future__ import annotations

import os
from functools import lru_cache

from dotenv import dotenv_values

# The same file (relative to the working directory) pydantic-settings reads TOLLWAY_* from.
ENV_FILE = ".env"


def dotenv_value(name: str) -> str | None:
    """NAME's value in ./.env, or None (no file, no such name, or a bare `NAME` line)."""
    path = os.path.abspath(ENV_FILE)
    try:
        st = os.stat(path)
    except OSError:
        return None
    # Keyed on size and mtime: an edited file is read again, an unchanged one never.
    return _read(path, st.st_mtime_ns, st.st_size).get(name)


@lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> dict[str, str]:
    values = dotenv_values(path, encoding="utf-8")
    return {k: v for k, v in values.items() if v is not None}
