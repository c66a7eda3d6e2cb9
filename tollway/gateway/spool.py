"""The usage spool: append-only files that hold every usage event until the database has it.

One process writes its own segment files (`usage-<pid>-<random>-<n>.spool`), each held under
an exclusive `flock` while the process lives, so processes sharing a directory (workers,
instances) tell a live file from one left by a dead process. A segment is one orjson event per
line; the sink appends all the events of one loop turn with one `os.write` (no fsync: the page
cache survives a crash of the process; `TOLLWAY_SPOOL_FSYNC` covers a power loss too, at a
cost). A segment is deleted once the database has every event in it; what is left when a
process dies or cannot reach the database is replayed by the next process to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tollway.core.types import UsageEvent

log = logging.getLogger("tollway.usage")

PATTERN = "usage-*.spool"


@dataclass(slots=True)
class Segment:
    """One spool file and how many of its events the database does not have yet."""

    path: Path
    fd: int  # open while this process owns it: the flock lives as long as the descriptor
    unwritten: int = 0
    keep: bool = False  # some events were dropped from memory: only a replay may delete it
    closed: bool = False


@dataclass
class Spool:
    directory: Path
    fsync: bool = False
    segments: list[Segment] = field(default_factory=list)  # oldest first; the last is open
    _name: str = ""
    _seq: int = 0

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._name = f"usage-{os.getpid()}-{os.urandom(4).hex()}"
        self.rotate()

    @property
    def current(self) -> Segment:
        return self.segments[-1]

    def rotate(self) -> None:
        """Close the open segment (if it holds anything) and start a new one."""
        if self.segments and self.current.unwritten == 0 and not self.current.closed:
            return  # nothing in it: keep using it
        if self.segments:
            self.current.closed = True
        self._seq += 1
        path = self.directory / f"{self._name}-{self._seq}.spool"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.segments.append(Segment(path, fd))

    def append(self, events: list[UsageEvent]) -> None:
        """One write for the lot; raises OSError when the disk refuses (full, read-only)."""
        seg = self.current
        seg.unwritten += len(events)  # counted even if the write fails: deleted only when done
        data = b"\n".join([orjson.dumps(ev) for ev in events]) + b"\n"
        view = memoryview(data)
        while view:
            n = os.write(seg.fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(seg.fd)

    def confirm(self, n: int, *, written: bool = True) -> None:
        """The oldest `n` events are in the database (or, written=False, dropped from memory:
        their segments stay on disk for the next start). Finished closed segments go."""
        while n > 0 and self.segments:
            seg = self.segments[0]
            take = min(n, seg.unwritten)
            seg.unwritten -= take
            n -= take
            seg.keep |= not written
            if seg.unwritten > 0 or not seg.closed:
                break
            self.segments.pop(0)
            self._release(seg, delete=not seg.keep)

    def adopt(self, path: Path) -> list[UsageEvent] | None:
        """Take over a dead process's segment: its events (to write first) and its lock.
        None when the file is live (another process holds it) or gone."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            events = read_events(path)
        except OSError:
            os.close(fd)
            raise
        if not path.exists():  # replayed and deleted by another process since we listed it
            os.close(fd)
            return None
        # Before the open segment: it is written first, and deleted when its events are done.
        self.segments.insert(len(self.segments) - 1, Segment(path, fd, len(events), closed=True))
        return events

    def dead_segments(self) -> list[Path]:
        own = {seg.path for seg in self.segments}
        return sorted(p for p in self.directory.glob(PATTERN) if p not in own)

    def close(self) -> int:
        """Release every segment; those with unwritten events stay for the next start.
        Returns how many events stay."""
        left = 0
        for seg in self.segments:
            left += seg.unwritten
            self._release(seg, delete=seg.unwritten == 0 and not seg.keep)
        self.segments.clear()
        return left

    def _release(self, seg: Segment, *, delete: bool) -> None:
        if delete:
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
        os.close(seg.fd)  # after the unlink: nobody can take a file that is being deleted


def read_events(path: Path) -> list[UsageEvent]:
    """A segment's events. A line that does not parse (a write torn by a full disk or a power
    loss) is logged and skipped: its event never made it to disk."""
    events = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                events.append(UsageEvent(**orjson.loads(line)))
            except (orjson.JSONDecodeError, TypeError):
                log.error("usage spool %s line %d is not an event; skipped", path.name, number)
    return events
