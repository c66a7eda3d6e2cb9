"""A long agent conversation as a chat completion request body, of about a given size.

What coding agents send: a long system prompt, tool definitions, then many turns of user
asks, assistant tool calls (arguments as JSON text), tool results (file contents: code with
quotes, backslashes, newlines, tabs, some non-ASCII) and assistant answers. Deterministic
(seeded), so every run and every target gets the same bytes.

    python bench/long_body.py 262144 [--stream]   # prints one body (for a look)
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from fake_upstream import MODEL

_TEXT = (
    "the request handler reads body bytes once and passes them upstream when nothing changes "
    "gateway cache limit token usage stream event chunk socket buffer parser model router key "
    "retry timeout budget worker process queue writer spool index migration schema column "
    "café naïve résumé — → ✓ 数据 データ"
)
_WORDS = _TEXT.split()

_CODE = '''def handle(self, request: Request) -> Response:
\t"""Answer one request; see `docs/{name}.md` for the "why"."""
\tpath = request.path.replace("\\\\", "/")  # Windows paths
\tif not path.startswith("/v1/"):
\t\treturn Response(404, {{"error": "not found: %s" % path}})
\tdata = json.loads(request.body or b"{{}}")
\tfor i, item in enumerate(data.get("{name}", [])):
\t\tself.log.debug("item %d: %r", i, item)
\treturn Response(200, data)

'''

_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{desc} Use it whenever the task needs it; paths are relative.",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "file path, relative"},
                    "content": {"type": "string", "description": "text to write"},
                    "limit": {"type": "integer", "minimum": 1},
                },
                "required": ["path"],
            },
        },
    }
    for name, desc in (
        ("read_file", "Read a file of the repository."),
        ("write_file", "Write a file of the repository."),
        ("run_tests", "Run the test suite, or part of it."),
        ("search", "Search the repository for a string."),
    )
]


def _prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def _turn(rng: random.Random, n: int) -> list[dict[str, Any]]:
    name = f"module_{n}"
    call_id = f"call_{n:05d}"
    args = json.dumps({"path": f"src/{name}.py", "limit": 400})
    code = "".join(_CODE.format(name=f"{name}_{i}") for i in range(rng.randint(2, 6)))
    return [
        {"role": "user", "content": _prose(rng, rng.randint(10, 40))},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "read_file", "arguments": args},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": code},
        {"role": "assistant", "content": _prose(rng, rng.randint(20, 80))},
    ]


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def make_body(size: int, stream: bool, model: str = MODEL) -> bytes:
    """A request body of `size` bytes give or take a few hundred (never much more)."""
    rng = random.Random(size)
    system = "You are a careful coding agent. " + " ".join(
        _prose(rng, 30) for _ in range(max(1, min(40, size // 4096)))
    )
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    body: dict[str, Any] = {"model": model, "messages": messages, "tools": _TOOLS}
    if stream:
        body["stream"] = True
    last = {"role": "user", "content": "Now fix the failing test and explain the change."}
    used = len(_dumps({**body, "messages": [*messages, last]}))
    n = 0
    while True:
        turn = _turn(rng, n)
        grows = len(_dumps({"m": turn})) - len('{"m":[]}') + len(turn)  # members and commas
        if used + grows > size:
            break
        messages.extend(turn)
        used += grows
        n += 1
    # Fill the rest with the last user message (ASCII, so bytes and characters agree).
    room = size - len(_dumps({**body, "messages": [*messages, last]}))
    filler = " ".join(rng.choice(_WORDS[:40]) for _ in range(room // 5))[: max(0, room - 1)]
    last["content"] = filler + " " + str(last["content"]) if filler else last["content"]
    messages.append(last)
    return _dumps(body)


if __name__ == "__main__":
    sys.stdout.buffer.write(make_body(int(sys.argv[1]), "--stream" in sys.argv) + b"\n")
