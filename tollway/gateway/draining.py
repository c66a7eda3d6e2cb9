"""uvicorn's Server, made to drain before it stops listening.

uvicorn closes its listener as soon as a SIGTERM arrives. This server first tells the app
(`/readyz` answers 503 "draining" from that moment) and keeps serving for the app's
`shutdown_ready_delay`, so a load balancer polling `/readyz` takes the instance out before
connections are refused. A second signal stops at once.
"""

from __future__ import annotations

import time
from types import FrameType
from typing import Any, Protocol

import uvicorn


class Drainable(Protocol):
    def begin_drain(self) -> float:
        """Start answering "draining"; returns how long to keep listening (seconds)."""
        ...


def _drainable(app: Any) -> Drainable | None:
    while app is not None and not hasattr(app, "begin_drain"):
        app = getattr(app, "app", None)  # uvicorn's wrappers keep the app as `.app`
    found: Drainable | None = app
    return found


class DrainingServer(uvicorn.Server):
    _stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = _drainable(getattr(self.config, "loaded_app", None))
        if self._stop_at is not None or self.should_exit or app is None:
            super().handle_exit(sig, frame)
            return
        delay = app.begin_drain()
        if delay <= 0:
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
        self._stop_at = time.monotonic() + delay

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


def use_for_workers() -> None:
    """uvicorn's worker processes build their own Server: make it this one."""
    from uvicorn.supervisors import multiprocess

    multiprocess.Server = DrainingServer  # type: ignore[attr-defined]
