"""Upstreams from the YAML config file and from the seed's JSON key list."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .target import Upstream

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    pass


def expand_env(value: str) -> str:
    """`${VAR}` or `${VAR:-default}`; an unset variable without default is an error."""

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set")

    return _ENV_REF.sub(repl, value)


class UpstreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    base_url: str
    api_key: str | None = None
    key_list: str | None = None  # the seed's {"keys": [{"name", "mail", "api_key"}]} file
    models: list[str] | str | None = None  # list, or "*" / omitted for all
    aliases: dict[str, str] = Field(default_factory=dict)
    weight: float = Field(default=1.0, ge=0)
    account: str | None = None
    serves_modelless: bool | None = None
    provider: str = "openai"

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return v

    def model_set(self) -> frozenset[str] | None:
        if self.models is None or self.models == "*" or self.models == ["*"]:
            return None
        if isinstance(self.models, str):
            return frozenset([self.models])
        return frozenset(self.models)


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    upstreams: list[UpstreamConfig] = Field(default_factory=list)


def _build(cfg: UpstreamConfig, name: str, api_key: str, account: str | None) -> Upstream:
    models = cfg.model_set()
    modelless = cfg.serves_modelless if cfg.serves_modelless is not None else models is None
    return Upstream(
        name=name,
        base_url=expand_env(cfg.base_url),
        api_key=api_key,
        models=models,
        aliases=dict(cfg.aliases),
        weight=cfg.weight,
        account=account,
        serves_modelless=modelless,
        provider=cfg.provider,
        source="config",
    )


def load_key_list(path: Path) -> list[dict[str, str]]:
    """The seed's key-list.json: {"keys": [{"name", "mail", "api_key"}]}."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read key list {path}: {exc}") from exc
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise ConfigError(f"{path}: expected an object with a `keys` list")
    out = []
    for i, item in enumerate(keys):
        if not isinstance(item, dict) or not item.get("api_key"):
            raise ConfigError(f"{path}: keys[{i}] has no api_key")
        out.append(
            {
                "name": str(item.get("name") or f"key-{i + 1}"),
                "mail": str(item.get("mail") or ""),
                "api_key": str(item["api_key"]),
            }
        )
    return out


def upstreams_from_config(config: GatewayConfig, base_dir: Path) -> list[Upstream]:
    result: list[Upstream] = []
    for cfg in config.upstreams:
        if cfg.key_list:
            path = Path(expand_env(cfg.key_list))
            if not path.is_absolute():
                path = base_dir / path
            for entry in load_key_list(path):
                account = cfg.account or entry["mail"] or None
                result.append(_build(cfg, f"{cfg.name}/{entry['name']}", entry["api_key"], account))
        else:
            key = expand_env(cfg.api_key) if cfg.api_key else ""
            result.append(_build(cfg, cfg.name, key, cfg.account))
    names = [u.name for u in result]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigError(f"duplicate upstream names: {', '.join(sorted(duplicates))}")
    return result


def read_config(path: Path) -> GatewayConfig:
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return GatewayConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_upstreams(path: Path | None) -> list[Upstream]:
    if path is None:
        return []
    return upstreams_from_config(read_config(path), path.parent)
