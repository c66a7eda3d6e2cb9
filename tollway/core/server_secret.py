"""The server secret: encrypts upstream keys at rest and signs UI sessions.

It is never stored in the database, so a copy of the database alone can neither decrypt an
upstream key nor mint a session. It comes from TOLLWAY_SECRET_KEY (several instances share it
that way) or from a file `tollway init` writes with mode 0600: `TOLLWAY_SECRET_KEY_FILE`,
by default beside a SQLite database (`<database>.secret`), else ./tollway.secret.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

from tollway.core.settings import Settings

PREFIX = "tws-"
# An in-memory database lives and dies with its process: so does its server secret.
_ephemeral: dict[str, str] = {}


class BadSecretFile(RuntimeError):
    """The secret file is readable by others, or empty."""


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def _memory(url: str) -> bool:
    return url.startswith("sqlite") and make_url(url).database in (None, "", ":memory:")


def secret_path(settings: Settings) -> Path | None:
    """Where the secret file is (or would be); None for an in-memory database."""
    if settings.secret_key_file is not None:
        return settings.secret_key_file
    url = settings.database_url
    if _memory(url):
        return None
    if url.startswith("sqlite"):
        return Path(f"{make_url(url).database}.secret")
    return Path("tollway.secret")


def configured(settings: Settings) -> str | None:
    """TOLLWAY_SECRET_KEY, when set and not blank."""
    if settings.secret_key is None:
        return None
    value = settings.secret_key.get_secret_value().strip()
    return value or None


def read_secret_file(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & 0o077:
        raise BadSecretFile(f"{path} is readable by others: chmod 600 {path}")
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise BadSecretFile(f"{path} is empty")
    return value


def server_secret(settings: Settings) -> str | None:
    """The secret these settings name, or None when there is none (yet)."""
    value = configured(settings)
    if value is not None:
        return value
    path = secret_path(settings)
    if path is None:
        return _ephemeral.setdefault(settings.database_url, new_secret())
    return read_secret_file(path)


def write_secret_file(path: Path, value: str, *, replace: bool = False) -> bool:
    """Write `value` to `path` with mode 0600, atomically: a reader sees the whole secret or
    nothing. Without `replace`, an existing file wins (returns False)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if it exists: concurrent starts agree on one secret
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def ensure_server_secret(settings: Settings) -> Path | None:
    """Create the secret file unless TOLLWAY_SECRET_KEY is set or the file exists. Returns
    the path of a file created now, else None."""
    if configured(settings) is not None:
        return None
    path = secret_path(settings)
    if path is None or path.exists():
        return None
    return path if write_secret_file(path, new_secret()) else None
