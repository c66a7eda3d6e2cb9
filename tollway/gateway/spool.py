"""The usage spool: append-only files that hold every usage event until the database has it.

One process writes its own segment files (`usage-<pid>-<random>-<n>.spool`), each held under
an exclusive `flock` while the process lives, so processes sharing a directory (workers,
instances) tell a live file from one left by a dead process. A segment holds a line naming the
fields, then a line per loop turn: that turn's events as one orjson array of rows, appended
with one `os.write` (no fsync: the page
cache survives a crash of the process; `TOLLWAY_SPOOL_FSYNC` covers a power loss too, at a
cost). A segment is deleted once the database has every event in it; what is left when a
process dies or cannot reach the database is replayed by the next process to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from tollway.core.types import UsageEvent

log = logging.getLogger("tollway.usage")

PATTERN = "usage-*.spool"

# Events are written as rows of values (no member names: a third of the bytes, and
# `attrgetter` builds a row in C); a segment's first line names the fields, in order.
FIELDS = tuple(f.name for f in fields(UsageEvent))
ROW = attrgetter(*FIELDS)
HEADER = orjson.dumps({"fields": FIELDS}) + b"\n"


@dataclass(slots=True)
class Segment:
    """One spool file and how many of its events the database does not have yet."""

    path: Path
    fd: int  # open while this process owns it: the flock lives as long as the descriptor
    unwritten: int = 0
    keep: bool = False  # some events were dropped from memory: only a replay may delete it
    closed: bool = False
    headed: bool = False  # its field-names line is written


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
        # One line a turn, the turn's events as one JSON array of rows: one orjson call, not
        # one per event, and no member names (py-spy: the per-event objects cost 3 % of the
        # proxy's CPU; rows cost about half).
        data = orjson.dumps([ROW(ev) for ev in events]) + b"\n"
        if not seg.headed:
            data = HEADER + data
            seg.headed = True
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
    """A segment's events: a line holds one loop turn's events as a JSON array (or, as
    written by earlier versions, one event). A line that does not parse (a write torn by a
    full disk or a power loss) is logged and skipped: its events never made it to disk."""
    events: list[UsageEvent] = []
    names: tuple[str, ...] = FIELDS
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                if isinstance(data, dict) and "fields" in data:
                    names = tuple(data["fields"])  # the field order its rows follow
                    continue
                items: list[Any] = data if isinstance(data, list) else [data]
                events.extend([_event(item, names) for item in items])
            except (orjson.JSONDecodeError, TypeError, ValueError):
                log.error("usage spool %s line %d is not an event; skipped", path.name, number)
    return events


def _event(item: Any, names: tuple[str, ...]) -> UsageEvent:
    """A row (values in `names` order) or, from earlier versions, an object with names. Fields
    this version does not know are dropped; ones it added keep their defaults."""
    values = dict(zip(names, item, strict=True)) if isinstance(item, list) else item
    return UsageEvent(**{k: v for k, v in values.items() if k in KNOWN})


KNOWN = frozenset(FIELDS)
