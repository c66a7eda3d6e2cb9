"""docs/reference/admin-api.md from the admin API's OpenAPI schema."""

from __future__ import annotations

import json
from typing import Any

from docsgen.common import banner, cell

METHODS = ("get", "post", "put", "patch", "delete")


def schema() -> dict[str, Any]:
    from tollway.admin import build_admin_api

    api: dict[str, Any] = build_admin_api(lambda: None).openapi()
    return api


def _type(s: dict[str, Any]) -> str:
    if "$ref" in s:
        name = str(s["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in s:
        return " or ".join(_type(x) for x in s["anyOf"])
    if s.get("type") == "array":
        return f"array of {_type(s.get('items', {}))}"
    if "enum" in s:
        return " / ".join(f"`{v}`" for v in s["enum"])
    if "const" in s:
        return f"`{s['const']}`"
    return str(s.get("type", "any"))


def _body_schema(content: dict[str, Any]) -> str:
    for media, spec in content.items():
        return f"{_type(spec.get('schema', {}))} (`{media}`)"
    return ""


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    out = [f"### {method.upper()} /admin/api{path}", ""]
    if op.get("summary"):
        out += [f"**{op['summary']}**", ""]
    if op.get("description"):
        out += [op["description"].strip(), ""]
    params = op.get("parameters", [])
    if params:
        out += [
            "| parameter | in | type | required | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p in params:
            out.append(
                f"| `{p['name']}` | {p['in']} | {cell(_type(p.get('schema', {})))} "
                f"| {'yes' if p.get('required') else 'no'} | {cell(p.get('description', ''))} |"
            )
        out.append("")
    body = op.get("requestBody")
    if body:
        out += [f"Request body: {_body_schema(body.get('content', {}))}", ""]
    out += ["| status | meaning | body |", "| --- | --- | --- |"]
    for status, resp in op.get("responses", {}).items():
        out.append(
            f"| {status} | {cell(resp.get('description', ''))} "
            f"| {cell(_body_schema(resp.get('content', {})))} |"
        )
    return [*out, ""]


def _model(name: str, s: dict[str, Any]) -> list[str]:
    out = [f"### {name}", ""]
    if s.get("description"):
        out += [s["description"].strip(), ""]
    props = s.get("properties", {})
    if not props:
        return out
    required = set(s.get("required", []))
    out += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
    for field, spec in props.items():
        out.append(
            f"| `{field}` | {cell(_type(spec))} | {'yes' if field in required else 'no'} "
            f"| {cell(spec.get('description', ''))} |"
        )
    return [*out, ""]


def render() -> str:
    api = schema()
    out = [
        banner("the admin API's OpenAPI schema (`build_admin_api(...).openapi()`)"),
        "# Admin API",
        "",
        "Every operation needs `Authorization: Bearer <admin secret>`. Errors are OpenAI-shaped",
        '(`{"error": {"message", "type", "param", "code"}}`, see [error codes](errors.md)).',
        "A running Tollway serves the same schema at `/admin/api/openapi.json` and interactive",
        "documentation at `/admin/api/docs`; the schema is also here:",
        "[admin-openapi.json](admin-openapi.json).",
        "",
        "## Operations",
        "",
    ]
    for path, item in api.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                out += _operation(path, method, item[method])
    out += ["## Schemas", ""]
    for name, s in sorted(api.get("components", {}).get("schemas", {}).items()):
        out += _model(name, s)
    return "\n".join(out).rstrip("\n") + "\n"


def render_json() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"
