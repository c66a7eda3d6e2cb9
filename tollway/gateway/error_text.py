"""The message of an upstream's error answer, for the usage row of a failed request.

Called only for answers with a status >= 400 (never on success), after the endpoint has masked
the upstream's key in the payload. The writer process bounds and cleans the text again.
"""

from __future__ import annotations

import orjson

MAX_CHARS = 500


def error_message(payload: bytes) -> str | None:
    """OpenAI's `{"error": {"message": ...}}`, or a bare `error`/`message`/`detail` string,
    else the start of the body as text."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = None
    text: object = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            text = err.get("message")
        elif isinstance(err, str):
            text = err
        if not isinstance(text, str):
            text = doc.get("message") or doc.get("detail")
    if not isinstance(text, str):
        text = payload[: MAX_CHARS * 4].decode("utf-8", "replace")
    text = text.strip()
    return text[:MAX_CHARS] or None
