"""Watch an SSE stream as it passes: pick out usage, drop the usage-only chunk and the
`"usage":null` members that the client did not ask for, count content chunks in case the
stream ends early."""

from __future__ import annotations

import re
from typing import Any

import orjson

_NULL_USAGE = (b'"usage":null', b'"usage": null')
# What asking for usage adds to every chunk (OpenAI's compact JSON). After a comma it can only
# be a member of an object: inside a JSON string the quote would be escaped.
_ADDED_NULL_USAGE = b',"usage":null'


def normalize_usage(usage: Any) -> dict[str, int] | None:
    """Chat/completions (`prompt_tokens`...) and Responses API (`input_tokens`...) shapes."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    total = usage.get("total_tokens")
    out: dict[str, int] = {}
    if isinstance(prompt, int):
        out["prompt_tokens"] = prompt
    if isinstance(completion, int):
        out["completion_tokens"] = completion
    if isinstance(total, int):
        out["total_tokens"] = total
    elif out:
        out["total_tokens"] = out.get("prompt_tokens", 0) + out.get("completion_tokens", 0)
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        out["cached_tokens"] = details["cached_tokens"]
    details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
        out["reasoning_tokens"] = details["reasoning_tokens"]
    return out or None


def usage_from_json(body: bytes) -> dict[str, int] | None:
    if b'"usage"' not in body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return normalize_usage(data.get("usage")) if isinstance(data, dict) else None


# The end of an event is a blank line; SSE lines end in LF, CRLF or CR. A boundary is kept
# byte for byte, so what the client gets is exactly what the upstream sent.
_BOUNDARY = re.compile(rb"(\r\n\r\n|\n\r\n|\r\n\n|\n\n|\r\r)")
_LINE = re.compile(rb"\r\n|\n|\r")
# A usage object (not `"usage":null`, which OpenAI puts in every chunk when usage is asked).
# Inside a JSON string the quotes would be escaped, so content cannot fake it.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


def _last_boundary(data: bytes) -> int:
    """Where the last complete event ends in `data` (0: none yet)."""
    if b"\r" not in data:  # the common case: LF only
        cut = data.rfind(b"\n\n")
        return cut + 2 if cut >= 0 else 0
    end = 0
    for match in _BOUNDARY.finditer(data):
        end = match.end()
    return end


class SSETracker:
    def __init__(self, hide_usage_chunk: bool) -> None:
        self.hide_usage_chunk = hide_usage_chunk
        self.usage: dict[str, int] | None = None
        self.content_chunks = 0
        self.saw_done = False
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward now: whole events only, so that one can be dropped cleanly."""
        data = self._pending + chunk if self._pending else chunk
        cut = _last_boundary(data)
        if not cut:
            self._pending = data
            return b""
        self._pending = data[cut:]
        ready = data[:cut]
        if self.hide_usage_chunk:  # the client did not ask: `"usage":null` was our doing
            ready = ready.replace(_ADDED_NULL_USAGE, b"")
        if b'"usage"' not in ready or _USAGE_OBJECT.search(ready) is None:
            self._count(ready)  # content only (and maybe [DONE]): forwarded as it is
            return ready
        return self._filter(ready)

    def tail(self) -> bytes:
        """Whatever is left when the stream ends: a last event without its blank line, which
        gets one, or a client would never dispatch it."""
        rest, self._pending = self._pending, b""
        if self.hide_usage_chunk:
            rest = rest.replace(_ADDED_NULL_USAGE, b"")
        out = self._filter(rest) if rest else b""
        return out + b"\n\n" if out.strip() else out

    def _count(self, segment: bytes) -> None:
        done = segment.count(b"[DONE]")
        if done:
            self.saw_done = True
        self.content_chunks += segment.count(b"data:") - done

    def _filter(self, ready: bytes) -> bytes:
        """`ready` minus the usage events we hide; everything else byte for byte. Only the
        events holding a usage object are looked at (usually one, at the end)."""
        out: list[bytes] = []
        pos = 0
        for match in _USAGE_OBJECT.finditer(ready):
            if match.start() < pos:
                continue  # in the event just handled
            start = max(pos, _last_boundary(ready[: match.start()]))
            after = _BOUNDARY.search(ready, match.end())
            end = after.end() if after else len(ready)
            self._count(ready[pos:start])
            out.append(ready[pos:start])
            if self._keep(ready[start:end]):
                out.append(ready[start:end])
            pos = end
        self._count(ready[pos:])
        out.append(ready[pos:])
        return b"".join(out)

    def _keep(self, event: bytes) -> bool:
        if b"[DONE]" in event:
            self.saw_done = True
            return True
        if b'"usage"' not in event or any(n in event for n in _NULL_USAGE):
            self.content_chunks += 1
            return True
        payload = b"\n".join(
            line[5:].strip() for line in _LINE.split(event) if line.startswith(b"data:")
        )
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(obj, dict):
            return True
        usage = normalize_usage(obj.get("usage"))
        if usage is None and isinstance(obj.get("response"), dict):  # Responses API
            usage = normalize_usage(obj["response"].get("usage"))
        if usage is not None:
            self.usage = usage
            if self.hide_usage_chunk and not obj.get("choices"):
                return False
        self.content_chunks += 1
        return True
