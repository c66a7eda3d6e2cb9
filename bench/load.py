"""The load: wrk (outside Python) with a Lua script, and a by-hand probe of the answer."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fake_upstream import MODEL, STREAM_HEADER

# wrk's done() hook prints one machine-readable line; latencies are in microseconds.
LUA_TEMPLATE = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT %d %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def request_body(stream: bool, model: str = MODEL) -> bytes:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def request_headers(key: str, extra: dict[str, str], stream: bool) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}", **extra}
    if stream:
        headers[STREAM_HEADER] = "1"
    return headers


# Only for a short second look after a run with errors: a response() hook slows wrk down.
LUA_CATCH = """
response = function(status, headers, body)
  if status > 299 and not caught then
    caught = true
    io.write("BENCH_ERROR ", status, " ", string.sub(body or "", 1, 300), "\\n")
  end
end
"""


def lua_file(path: Path) -> str:
    """A Lua expression for a file's bytes: for bodies too large (or too far from ASCII: LuaJIT
    has no \\u escapes) for a literal."""
    return (
        f"(function() local f = assert(io.open({lua_string(str(path))}, 'rb')) "
        "local s = f:read('*a') f:close() return s end)()"
    )


def write_lua(
    path: Path,
    key: str,
    extra: dict[str, str],
    stream: bool,
    catch: bool = False,
    body_file: Path | None = None,
) -> Path:
    headers = "\n".join(
        f"wrk.headers[{lua_string(k)}] = {lua_string(v)}"
        for k, v in request_headers(key, extra, stream).items()
    )
    body = lua_file(body_file) if body_file else lua_string(request_body(stream).decode())
    text = LUA_TEMPLATE.format(body=body, headers=headers)
    path.write_text(text + (LUA_CATCH if catch else ""))
    return path


def catch_error(wrk: str, url: str, lua: Path, conns: int) -> str:
    """Re-run 2 s with a response() hook to see what the failing answers say."""
    cmd = wrk_cmd(wrk, url, lua, conns, 2)
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=60
    )
    match = re.search(r"^BENCH_ERROR (.*)$", out.stdout, re.MULTILINE)
    return match.group(1)[:300] if match else "no non-2xx answer on a second look"


def probe(
    url: str,
    key: str,
    extra: dict[str, str],
    stream: bool,
    context: ssl.SSLContext | None = None,
    body: bytes | None = None,
) -> str | None:
    """One request by hand before measuring: the answer must be right, not just fast.
    `context` verifies an https:// target (default: the system's CA store).

    Returns None when it is, else what was wrong."""
    headers = {"Content-Type": "application/json", **request_headers(key, extra, stream)}
    data = request_body(stream) if body is None else body
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            status, ctype, text = resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, text = exc.code, exc.headers.get("content-type", ""), exc.read()
    except OSError as exc:
        return f"no answer: {exc}"
    if stream:
        ok = status == 200 and "text/event-stream" in ctype and b"data: [DONE]" in text
    else:
        ok = status == 200 and b'"chat.completion"' in text
    return None if ok else f"wrong answer: {status} {ctype} {text[:300]!r}"


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int  # connect + read + write + timeout
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def ok_rps(self) -> float:
        return max(0, self.requests - self.non_2xx) / self.duration_s if self.duration_s else 0.0


def wrk_cmd(wrk: str, url: str, lua: Path, conns: int, seconds: float) -> list[str]:
    return [
        wrk,
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]


def parse_wrk(stdout: str) -> WrkResult | None:
    match = re.search(r"^BENCH_RESULT ([\d ]+)$", stdout, re.MULTILINE)
    if not match:
        return None
    req, dur_us, status, conn, read, write, tout, p50, p99, mean = (
        int(x) for x in match.group(1).split()
    )
    return WrkResult(
        requests=req,
        duration_s=dur_us / 1e6,
        non_2xx=status,
        socket_errors=conn + read + write + tout,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        mean_ms=mean / 1000,
    )


def run_wrk(wrk: str, url: str, lua: Path, conns: int, seconds: float) -> WrkResult:
    cmd = wrk_cmd(wrk, url, lua, conns, seconds)
    # Bounded: wrk stops itself after -d; the timeout only guards against a hung wrk.
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=seconds + 60,
    )
    result = parse_wrk(out.stdout)
    if out.returncode != 0 or result is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]}{out.stderr[-500:]}")
    return result
