"""docs/reference/settings.md from `tollway.core.settings.Settings`."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from docsgen.common import banner, cell


class MissingDescription(Exception):
    """A setting without `Field(description=...)`: the reference would be incomplete."""


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    for noise in ("typing.", "pydantic.types.", "pathlib.", "<class '", "'>"):
        text = text.replace(noise, "")
    return text.replace("SecretStr", "secret")


def _default(info: FieldInfo) -> str:
    value = info.default
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def render(model: type[BaseSettings] | None = None) -> str:
    from tollway.core.settings import Settings as Default

    Settings = model or Default
    prefix = str(Settings.model_config.get("env_prefix", ""))
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    if missing:
        raise MissingDescription(
            "settings without Field(description=...) in tollway/core/settings.py: "
            + ", ".join(missing)
        )
    lines = [
        banner("`tollway.core.settings.Settings`"),
        "# Settings",
        "",
        "Every setting is an environment variable (or a line of a `.env` file in the working",
        "directory). `tollway serve --host --port --workers` override the first three.",
        "Secrets (`secret`) are never printed or logged.",
        "",
        "| variable | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, info in Settings.model_fields.items():
        env = f"{prefix}{name}".upper()
        lines.append(
            f"| `{env}` | {cell(_type_name(info.annotation))} | {cell(_default(info))} "
            f"| {cell(info.description)} |"
        )
    return "\n".join(lines) + "\n"
