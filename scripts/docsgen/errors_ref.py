"""docs/reference/errors.md: every error code Tollway answers with, found in the code.

The scan reads every `GatewayError(...)`, `error_body(...)`, the admin API's `_json(...)` and
the gateway's stream `_error_event(...)` call under tollway/ with `ast`. A call whose status,
type or code is not a literal must be explained in RESOLVED (by file and function), and every
code needs a line in MEANINGS: a new error without either fails `scripts/docs`, so the page
cannot silently miss one.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from docsgen.common import ROOT, banner, cell

# name -> positions of (status, type, code); None = not an argument of that call.
SIGNATURES: dict[str, tuple[int | None, int, int, str]] = {
    "GatewayError": (0, 2, 3, "invalid_request_error"),
    "_json": (0, 2, 3, ""),
    "error_body": (None, 1, 2, ""),
    "_error_event": (None, 1, 2, ""),
    "stream_error": (None, 1, 2, ""),  # a client API's final stream event (gateway/apis/)
}

# Helpers with common names count only where they are the error helpers.
ONLY_UNDER = {
    "_json": "tollway/admin/",
    "_error_event": "tollway/gateway/",
    "stream_error": "tollway/gateway/",
}

Found = tuple[str, str, str | None]  # (status, type, code)

# Calls with a computed status, type or code: what they can produce. An empty list means
# the call only re-sends an error already listed (e.g. a GatewayError's own body).
RESOLVED: dict[tuple[str, str], list[Found]] = {
    ("tollway/core/errors.py", "GatewayError.body"): [],
    ("tollway/admin/errors.py", "_json"): [],
    ("tollway/admin/errors.py", "install_error_handlers.on_service"): [
        ("422", "invalid_request_error", "invalid_value"),
        ("409", "invalid_request_error", "conflict"),
    ],
    ("tollway/admin/errors.py", "install_error_handlers.on_http"): [
        ("400", "invalid_request_error", "invalid_json"),
        ("404", "invalid_request_error", "not_found"),
        ("405", "invalid_request_error", "method_not_allowed"),
    ],
    ("tollway/app.py", "TollwayApp._build_web.not_found"): [
        ("404", "invalid_request_error", "not_found"),
    ],
    ("tollway/gateway/edge.py", "<module>"): [
        ("503", "service_unavailable_error", "too_many_connections"),
    ],
    ("tollway/gateway/guard.py", "unexpected"): [
        ("503", "service_unavailable_error", "database_unavailable"),
        ("503", "service_unavailable_error", "service_unavailable"),
    ],
    ("tollway/gateway/limiting/policy.py", "refusal_error"): [
        ("429", "requests", "rate_limit_exceeded"),
        ("429", "tokens", "rate_limit_exceeded"),
    ],
    ("tollway/observe/__init__.py", "Observability.serve_metrics"): [
        ("401", "invalid_request_error", "invalid_metrics_token"),
    ],
    # A client API's renderers: they re-send errors listed where they are raised, or an
    # upstream's own error reshaped for the client's API.
    ("tollway/gateway/apis/openai.py", "OpenAIApi.stream_error"): [],
    ("tollway/gateway/apis/openai.py", "OpenAIApi.foreign_error"): [],
    ("tollway/gateway/endpoint.py", "Gateway._stream"): [
        ("stream", "timeout_error", "upstream_idle_timeout"),
        ("stream", "upstream_error", "upstream_stream_error"),
        ("stream", "service_unavailable_error", "server_shutting_down"),
    ],
}

# What each code means for the client (and what to do). `null` is an error without a code.
MEANINGS: dict[str, str] = {
    "invalid_api_key": "The key is missing, unknown or malformed.",
    "untranslatable": "The request uses something the upstream's API cannot express (e.g. `n` > 1 "
    "or `top_k` across APIs); nothing was sent.",
    "invalid_metrics_token": "`GET /metrics` without the right `TOLLWAY_METRICS_TOKEN` bearer.",
    "key_expired": "The key passed its expiry date; create or rotate one.",
    "key_disabled": "An admin disabled the key.",
    "model_not_allowed": "The key may not use this model (its `models` list).",
    "model_not_found": "No upstream serves this model.",
    "invalid_json": "The request body is not a JSON object.",
    "invalid_path": "The path has a `.` or `..` segment (encoded or not); refused before auth.",
    "request_too_large": "The body is larger than `TOLLWAY_MAX_BODY_BYTES` (or the whole "
    "body budget).",
    "server_busy": "Too many large bodies are held at once (`TOLLWAY_MAX_BUFFERED_BODY_BYTES`); "
    "retry after `Retry-After`.",
    "too_many_connections": "Every connection slot is in a request "
    "(`TOLLWAY_MAX_CONNECTIONS`); the connection is closed. Retry shortly.",
    "too_many_invalid_keys": "This address sent too many invalid keys "
    "(`TOLLWAY_INVALID_KEY_LIMIT`); wait for `Retry-After`.",
    "rate_limit_exceeded": "A request or token window of the key is full (`type` says which); "
    "retry after `Retry-After`.",
    "concurrency_limit_exceeded": "The key has `max_parallel` requests in flight.",
    "insufficient_quota": "The key's token quota or budget is spent (`x-should-retry: false`).",
    "limits_unavailable": "Redis cannot be reached, so keys with limits are refused (fail "
    "closed); keys without limits are unaffected.",
    "no_upstream_available": "Every upstream of the model is out of rotation or failed.",
    "upstream_unreachable": "No upstream could be connected to.",
    "upstream_timeout": "No upstream answered within the timeouts.",
    "upstream_idle_timeout": "The upstream went silent for `TOLLWAY_UPSTREAM_READ_TIMEOUT` "
    "after its answer began (504, or a final stream event).",
    "upstream_stream_error": "The upstream connection was cut mid-stream (final stream event).",
    "upstream_auth_failed": "Every upstream tried rejected Tollway's own key; an operator must "
    "fix the upstream key. The upstream's text is never passed on.",
    "upstream_out_of_credit": "Every upstream account for the model is out of credit.",
    "server_shutting_down": "The instance is stopping; retry (another instance will answer).",
    "database_unavailable": "The database cannot be reached (e.g. while reading an uncached "
    "key); retry after `Retry-After`.",
    "service_unavailable": "Another service Tollway depends on cannot be reached.",
    "internal_error": "An unexpected failure; the message names the request id, whose "
    "traceback is in the log.",
    "client_closed": "The client left before sending its whole body (recorded as 499; nobody "
    "receives it).",
    "not_found": "Unknown path (outside `/v1`), or no such object in the admin API.",
    "invalid_admin_secret": "Admin API: missing or wrong admin secret.",
    "admin_auth_throttled": "Admin API: too many wrong admin secrets from this address.",
    "admin_disabled": "Admin API: no admin secret configured (`tollway init`).",
    "not_ready": "Admin API: the instance is starting or stopping.",
    "invalid_value": "Admin API: a parameter, field or query parameter is invalid or unknown.",
    "conflict": "Admin API: the change conflicts with an existing record.",
    "method_not_allowed": "Admin API: method not allowed (`Allow` lists those that are).",
    "null": "400: `model` is missing or not a non-empty string (`param` `model`); 502 "
    "(`upstream_error`): the upstream connection failed after a non-streamed answer began.",
}


class UnexplainedError(Exception):
    """The scan found an error the reference cannot describe yet."""


@dataclass
class Site:
    path: str
    where: str
    found: list[Found]


def _literal(node: ast.expr | None) -> str | bool | None:
    """The constant's text, None for a literal None, False when computed."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, (int, str))
    ):
        return None if node.value is None else str(node.value)
    return False


def _arg(call: ast.Call, pos: int | None, name: str) -> ast.expr | None:
    if pos is not None and pos < len(call.args):
        return call.args[pos]
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.scope: list[str] = []
        self.sites: list[Site] = []

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in SIGNATURES and self.path.startswith(ONLY_UNDER.get(name, "tollway/")):
            s_pos, t_pos, c_pos, default_type = SIGNATURES[name]
            status = "stream" if name in ("_error_event", "stream_error") else None
            if s_pos is not None:
                status = _literal(_arg(node, s_pos, "status"))  # type: ignore[assignment]
            type_node = _arg(node, t_pos, "type")
            etype = default_type if type_node is None else _literal(type_node)
            code = _literal(_arg(node, c_pos, "code"))
            where = ".".join(self.scope) or "<module>"
            if any(v is False for v in (status, etype, code)) or status is None:
                self.sites.append(Site(self.path, where, []))
            else:
                self.sites.append(Site(self.path, where, [(str(status), str(etype), code)]))  # type: ignore[list-item]
        self.generic_visit(node)


def scan(root: Path = ROOT) -> list[Site]:
    sites: list[Site] = []
    for file in sorted((root / "tollway").rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        if "/migrations/" in rel or rel.startswith("tollway/ui/"):
            continue  # the UI answers HTML pages, not API errors
        scanner = _Scanner(rel)
        scanner.visit(ast.parse(file.read_text(), rel))
        sites += scanner.sites
    return sites


def collect(root: Path = ROOT) -> dict[str | None, set[tuple[str, str, str]]]:
    """code -> {(status, type, surface)}; raises UnexplainedError for what it cannot place."""
    problems: list[str] = []
    used: set[tuple[str, str]] = set()
    codes: dict[str | None, set[tuple[str, str, str]]] = {}
    for site in scan(root):
        found = site.found
        if not found:
            key = (site.path, site.where)
            if key not in RESOLVED:
                problems.append(
                    f"{site.path} ({site.where}): status, type or code is computed; add it to "
                    "RESOLVED in scripts/docsgen/errors_ref.py"
                )
                continue
            used.add(key)
            found = RESOLVED[key]
        surface = "admin API" if site.path.startswith("tollway/admin/") else "/v1"
        if site.path == "tollway/app.py":
            surface = "any path outside `/v1`"
        for status, etype, code in found:
            codes.setdefault(code, set()).add((status, etype, surface))
    problems += [
        f"RESOLVED names {p} ({w}), which no longer has such a call"
        for p, w in RESOLVED
        if (p, w) not in used
    ]
    names = {"null" if c is None else c for c in codes}
    problems += [f"no MEANINGS entry for code `{c}`" for c in sorted(names - MEANINGS.keys())]
    problems += [
        f"MEANINGS has `{c}`, which the code no longer uses"
        for c in sorted(MEANINGS.keys() - names)
    ]
    if problems:
        raise UnexplainedError("\n".join(problems))
    return codes


def render() -> str:
    codes = collect()
    out = [
        banner("every error the code constructs (`scripts/docsgen/errors_ref.py` scans it)"),
        "# Error codes",
        "",
        "Every error Tollway itself answers is OpenAI-shaped:",
        "",
        "```json",
        '{"error": {"message": "...", "type": "...", "param": null, "code": "..."}}',
        "```",
        "",
        "Clients should act on `code` (and the HTTP status), not on `message`. An upstream's own",
        "answers (its 4xx, for example) pass through unchanged and are not listed here. A",
        'status of "stream" means a final `data: {"error": ...}` event of a stream that had',
        "already begun (its HTTP status was 200).",
        "",
        "| code | status | type | where | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]

    def order(item: tuple[str | None, set[tuple[str, str, str]]]) -> tuple[bool, str]:
        code, uses = item  # /v1 codes first, then the admin API's; by name
        return (all(u[2] != "/v1" for u in uses), code or "~")

    for code, uses in sorted(codes.items(), key=order):
        statuses = ", ".join(sorted({u[0] for u in uses}))
        types = ", ".join(f"`{t}`" for t in sorted({u[1] for u in uses}))
        surfaces = ", ".join(sorted({u[2] for u in uses}))
        name = "`null`" if code is None else f"`{code}`"
        meaning = MEANINGS["null" if code is None else code]
        out.append(f"| {name} | {statuses} | {types} | {cell(surfaces)} | {cell(meaning)} |")
    return "\n".join(out) + "\n"
