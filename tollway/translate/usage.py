"""Usage in both shapes, normalised to the gateway's fields (prompt_tokens counts every
prompt token, cached or not, as OpenAI does; Anthropic's input_tokens does not)."""

from __future__ import annotations

from typing import Any


def anthropic_usage(usage: Any) -> dict[str, int] | None:
    """Anthropic `usage` → prompt/completion/total, cached (cache reads), cache writes."""
    if not isinstance(usage, dict):
        return None
    fresh = usage.get("input_tokens")
    output = usage.get("output_tokens")
    read = usage.get("cache_read_input_tokens")
    written = usage.get("cache_creation_input_tokens")
    read = read if isinstance(read, int) else 0
    written = written if isinstance(written, int) else 0
    if not isinstance(fresh, int) and not isinstance(output, int):
        return None
    prompt = (fresh if isinstance(fresh, int) else 0) + read + written
    completion = output if isinstance(output, int) else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": read,
        "cache_write_tokens": written,
    }


def chat_usage_from(usage: dict[str, int] | None) -> dict[str, Any] | None:
    """The chat-completions `usage` object for normalised usage."""
    if usage is None:
        return None
    out: dict[str, Any] = {
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "completion_tokens": usage.get("completion_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
    }
    if "cached_tokens" in usage:
        out["prompt_tokens_details"] = {"cached_tokens": usage["cached_tokens"]}
    return out


def messages_usage_from(usage: dict[str, int] | None) -> dict[str, int]:
    """The Messages `usage` object for normalised usage (input_tokens excludes the cache)."""
    usage = usage or {}
    read = usage.get("cached_tokens", 0)
    written = usage.get("cache_write_tokens", 0)
    return {
        "input_tokens": max(0, usage.get("prompt_tokens", 0) - read - written),
        "output_tokens": usage.get("completion_tokens", 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }
