"""Processes the benchmark starts, and what it reads about them from /proc.

Every target runs in its own session (``start_new_session``), so its whole process tree (uvicorn
workers, node, nginx workers) is "every process whose session id is the leader's pid": CPU time
and memory are summed over that, and stopping kills the whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Processes:
    """Starts background processes in their own session and always stops them."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        with (self.logdir / f"{name}.log").open("wb") as logfile:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and group: we can find and kill workers
            )
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, size: int = 2000) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is not None]

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Stray children (a worker that outlived its master) are still in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs.clear()


# --- /proc ---------------------------------------------------------------------------------------


def _stat_fields(pid: str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def tree_pids(session: int) -> list[int]:
    """Every live process in the session `session` (the leader's pid)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            # After the name: state(0) ppid(1) pgrp(2) session(3)
            if fields is not None and int(fields[3]) == session:
                pids.append(int(entry.name))
    return pids


def tree_cpu_seconds(session: int) -> float:
    """User + system CPU of the tree, including children it has already reaped."""
    ticks = 0
    for pid in tree_pids(session):
        fields = _stat_fields(str(pid))
        if fields is not None:  # utime(11) stime(12) cutime(13) cstime(14) after the name
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss_mb(session: int) -> float:
    return sum(_status_kb(pid, "VmRSS") for pid in tree_pids(session)) / 1024


def max_process_hwm_mb(session: int) -> float:
    """The largest peak RSS (VmHWM) of any single process in the tree."""
    return max((_status_kb(pid, "VmHWM") for pid in tree_pids(session)), default=0) / 1024


class RssSampler:
    """Samples the tree's total RSS in a thread while a run goes on; keeps the peak."""

    def __init__(self, session: int, interval: float = 0.25) -> None:
        self.session = session
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.session))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_mb = max(self.peak_mb, tree_rss_mb(self.session))


def _socket_inodes(session: int) -> set[str]:
    inodes = set()
    for pid in tree_pids(session):
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(fd.path)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    return inodes


def listening_hosts(session: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) the tree listens on with TCP."""
    inodes = _socket_inodes(session)
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    hosts.add(cols[1].split(":")[0])
    return hosts


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def assert_loopback_only(name: str, session: int) -> None:
    """Refuse to benchmark a target listening beyond loopback."""
    wide = listening_hosts(session) - LOOPBACK_HEX
    if wide:
        sys.exit(f"bench: {name} listens on non-loopback addresses {sorted(wide)}; refusing")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks stop our children.

    SIGINT is set back to KeyboardInterrupt explicitly: a shell starting us in the background
    leaves it ignored, and Ctrl-C must always clean up."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
