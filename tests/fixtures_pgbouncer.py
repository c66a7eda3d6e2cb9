"""A real PgBouncer (Debian's `pgbouncer`) in transaction pooling mode in front of the real
PostgreSQL, started per test on a free port. Without the binary: skip locally, fail in CI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fixtures_db import PG_HOST, PG_PORT
from .servers import free_port

INI = """[databases]
* = host={pg_host} port={pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {auth}
pool_mode = transaction
default_pool_size = 3
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options
logfile =
pidfile =
"""


def _command(ini: Path) -> list[str]:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("pgbouncer is not installed (scripts/test installs Debian's package)")
        pytest.skip("pgbouncer is not installed; CI runs these")
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        return ["runuser", "-u", "postgres", "--", binary, str(ini)]
    return [binary, str(ini)]


@pytest.fixture
def pgbouncer_port() -> Iterator[int]:
    folder = Path(tempfile.mkdtemp(prefix="tollway-pgbouncer-"))
    folder.chmod(0o755)  # readable by the postgres user it runs as
    port = free_port()
    auth = folder / "users.txt"
    auth.write_text('"postgres" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(INI.format(pg_host=PG_HOST, pg_port=PG_PORT, port=port, auth=auth))
    for path in (auth, ini):
        path.chmod(0o644)
    log = (folder / "log").open("wb")
    proc = subprocess.Popen(_command(ini), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "log").read_text()) from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
