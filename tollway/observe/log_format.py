"""`TOLLWAY_LOG_FORMAT=json`: Tollway's own log records (and uvicorn's) as one JSON object a
line, the same shape as the request log's lines."""

from __future__ import annotations

import logging

import orjson

from .request_log import _iso


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def configure(level: str, fmt: str) -> None:
    """The root logger for `tollway serve`: text as before, or JSON lines."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
