"""Watch an SSE stream as it passes: pick out usage, drop the usage-only chunk that the
client did not ask for, count content chunks in case the stream ends early."""

from __future__ import annotations

from typing import Any

import orjson

_NULL_USAGE = (b'"usage":null', b'"usage": null')


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
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._pending = data
            return b""
        cut += 2
        self._pending = data[cut:]
        ready = data[:cut]
        if b'"usage"' not in ready and b"[DONE]" not in ready:
            self.content_chunks += ready.count(b"data:")
            return ready
        return self._filter(ready)

    def tail(self) -> bytes:
        """Whatever is left when the stream ends (a last event without a blank line)."""
        rest, self._pending = self._pending, b""
        return self._filter(rest) if rest else b""

    def _filter(self, ready: bytes) -> bytes:
        kept: list[bytes] = []
        for event in ready.split(b"\n\n"):
            if not event:
                continue
            if self._keep(event):
                kept.append(event)
        return b"".join(e + b"\n\n" for e in kept)

    def _keep(self, event: bytes) -> bool:
        if b"[DONE]" in event:
            self.saw_done = True
            return True
        if b'"usage"' not in event or any(n in event for n in _NULL_USAGE):
            self.content_chunks += 1
            return True
        payload = b"".join(
            line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
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
