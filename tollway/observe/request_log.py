"""One log line per request, from the usage event (so it holds what the usage row holds: no
key, no upstream key, no prompt, no answer). A sink observer gathers the events (after the
responses went out) and every 50 ms hands them to a writer thread, which builds their lines and
writes them: the event loop neither formats nor waits on stderr.

Levels: INFO for a request that succeeded, WARNING for one refused or failed on the client's
side (4xx), ERROR for an upstream or gateway failure; `TOLLWAY_REQUEST_LOG_LEVEL` is the least
severe level written."""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
import traceback
from typing import IO, Any

import orjson

from tollway.core.types import UsageEvent

from .classify import error_class

LOGGER = "tollway.requests"
HAND_OVER_SECONDS = 0.05  # the loop gives gathered lines to the writer thread this often
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_NAMES = {logging.INFO: "INFO", logging.WARNING: "WARNING", logging.ERROR: "ERROR"}
_JSON_NAMES = {logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


def level_of(event: UsageEvent) -> int:
    klass = error_class(event)
    if klass in ("upstream", "gateway") or event.status >= 500:
        return logging.ERROR
    if klass == "client":
        return logging.WARNING
    return logging.INFO


_second: tuple[int, str] = (-1, "")  # the last second formatted (lines come in time order)


def _iso(ts: float) -> str:
    global _second
    ms = int(ts * 1000) % 1000
    second = int(ts)
    last, text = _second
    if second != last:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
        _second = (second, text)
    return f"{text}.{ms:03d}Z"


def json_line(event: UsageEvent, level: int) -> str:
    e = event
    return orjson.dumps(
        {
            "ts": _iso(e.ts),
            "level": _JSON_NAMES[level],
            "logger": LOGGER,
            "request_id": e.request_id,
            "key_id": e.key_id,
            "method": e.method,
            "endpoint": e.endpoint,
            "model": e.model,
            "upstream": e.upstream,
            "upstream_model": e.upstream_model,
            "fallback_from": e.fallback_from,
            "status": e.status,
            "stream": e.stream,
            "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens,
            "total_tokens": e.total_tokens,
            "cost_usd": e.cost_usd,
            "latency_ms": None if e.latency_ms is None else round(e.latency_ms, 3),
            "ttft_ms": None if e.ttft_ms is None else round(e.ttft_ms, 3),
            "attempts": e.attempts,
            "error_type": e.error_type,
        }
    ).decode()


def _text(value: Any) -> str:
    """A value as one token: quoted (JSON string escapes) when it holds a space, a quote, an
    `=` or anything unprintable, so no client-chosen name can forge a field or a line."""
    if value is None:
        return "-"
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:
        found = _TEXTS.get(value)
        if found is not None:
            return found
    elif isinstance(value, float):
        return f"{value:.3f}" if value >= 0.001 or value == 0 else f"{value:.8f}"
    text = str(value)
    if text and text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        token = text
    else:
        token = orjson.dumps(text).decode()
    if kind is str and len(_TEXTS) < MAX_TEXTS:
        _TEXTS[value] = token
    return token


MAX_TEXTS = 4096  # strings remembered as tokens (methods, endpoints, models, upstreams, errors)
_TEXTS: dict[str, str] = {}
MAX_HEADS = 4096  # (key, method, endpoint, model, upstream) combinations remembered as text
_HEADS: dict[tuple[Any, ...], str] = {}


def _head(e: UsageEvent) -> str:
    """The fields that repeat from request to request (key, route, model, upstream), formatted
    once per combination: most of a line's cost was quoting them field by field."""
    kind = (e.key_id, e.method, e.endpoint, e.model, e.upstream)
    head = _HEADS.get(kind)
    if head is None:
        head = (
            f" key_id={_text(e.key_id)} method={_text(e.method)} endpoint={_text(e.endpoint)}"
            f" model={_text(e.model)} upstream={_text(e.upstream)}"
        )
        if len(_HEADS) >= MAX_HEADS:
            _HEADS.clear()
        _HEADS[kind] = head
    return head


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def text_line(event: UsageEvent, level: int) -> str:
    e = event
    error = e.error_type
    return (
        f"{_iso(e.ts)} {_NAMES[level]} {LOGGER}: request_id={e.request_id}{_head(e)}"
        f" status={e.status} stream={'true' if e.stream else 'false'}"
        f" prompt_tokens={_count(e.prompt_tokens)}"
        f" completion_tokens={_count(e.completion_tokens)}"
        f" cost_usd={_text(e.cost_usd)} latency_ms={_ms(e.latency_ms)}"
        f" ttft_ms={_ms(e.ttft_ms)} attempts={e.attempts}"
        f" error_type={'-' if error is None else _text(error)}"
        + (f" fallback_from={_text(e.fallback_from)}" if e.fallback_from is not None else "")
    )


class RequestLog:
    def __init__(self, fmt: str = "text", level: str = "info", stream: IO[str] | None = None):
        self.min_level = _LEVELS[level]
        self._line = json_line if fmt == "json" else text_line
        self._stream = stream if stream is not None else sys.stderr
        self._queue: queue.SimpleQueue[list[UsageEvent] | None] = queue.SimpleQueue()
        self._pending: list[UsageEvent] = []  # gathered on the loop until the next hand-over
        self._thread = threading.Thread(target=self._write, name="tollway-request-log", daemon=True)
        self._thread.start()
        self.lines = 0

    def observe(self, events: list[UsageEvent]) -> None:
        """A loop turn's events join those gathered since the last hand-over; the writer thread
        gets them every HAND_OVER_SECONDS (waking it, and its GIL turn, once per turn was most
        of the cost), builds their lines and writes them: the event loop does neither."""
        if self.min_level > logging.INFO:
            events = [e for e in events if level_of(e) >= self.min_level]
        if not events:
            return
        self.lines += len(events)
        if self._pending:
            self._pending += events
            return
        self._pending = list(events)
        try:
            asyncio.get_running_loop().call_later(HAND_OVER_SECONDS, self._hand_over)
        except RuntimeError:  # no loop (called directly): at once
            self._hand_over()

    def _hand_over(self) -> None:
        events, self._pending = self._pending, []
        if events:
            self._queue.put(events)

    def _write(self) -> None:
        get, line, stream = self._queue.get, self._line, self._stream
        while True:
            events = get()
            if events is None:
                return
            try:
                text = "\n".join([line(e, level_of(e)) for e in events])
                stream.write(text + "\n")
                stream.flush()
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def close(self) -> None:
        """Writes what is gathered and queued, then stops the thread."""
        self._hand_over()
        self._queue.put(None)
        self._thread.join()
