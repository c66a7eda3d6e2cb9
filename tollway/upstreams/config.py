"""Upstreams from the YAML config file and from the seed's JSON key list."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tollway.core.dotenv import dotenv_value

from .azure import DEFAULT_API_VERSION, AzureRoute
from .egress import Egress, Proxy
from .headers import auth_name, check_headers, check_value, has_control
from .policy import PoolPolicy
from .target import Upstream

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    pass


def expand_env(value: str) -> str:
    """`${VAR}` or `${VAR:-default}`, from the environment, else from `.env`; an unset
    variable without default is an error."""

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        from_file = dotenv_value(name)
        if from_file is not None:
            return from_file
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (in the environment or .env)")

    return _ENV_REF.sub(repl, value)


Strategy = Literal["balance", "weighted", "least_busy", "latency", "round_robin"]


class PocketBaseConfig(BaseModel):
    """A PocketBase collection with the seed's fields `name`, `api_key`, `mail`."""

    model_config = ConfigDict(extra="forbid")

    url: str
    collection: str
    email: str
    password: str
    auth_collection: str = "_superusers"  # or an auth collection such as "users"
    refresh_interval: float = Field(default=300.0, ge=0)  # 0: load once
    per_page: int = Field(default=200, ge=1, le=1000)
    timeout: float = Field(default=10.0, gt=0)


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
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    manual_balance_usd: float | None = None
    # Sent on every request to this upstream (e.g. OpenRouter's HTTP-Referer / X-Title);
    # values may use ${VAR}. A client's header of the same name is replaced.
    headers: dict[str, str] = Field(default_factory=dict)
    # Account-selecting client headers (OpenAI-Organization, OpenAI-Project) let through.
    pass_headers: list[str] = Field(default_factory=list)
    # Where the key goes (bearer | x-api-key | header:<Name>) and the APIs it speaks.
    auth: str = "bearer"
    apis: list[Literal["openai", "anthropic"]] = Field(default=["openai"], min_length=1)
    # Keys from PocketBase; `key_list` is then the fallback when PocketBase is unreachable.
    pocketbase: PocketBaseConfig | None = None
    # Network: a PEM file of CAs for this upstream's TLS (relative to the config file), no
    # certificate check at all (warned about), an HTTP proxy URL or "direct".
    ca_bundle: str | None = None
    verify: bool = True
    proxy: str | None = None
    # provider "azure": the data-plane api-version ("v1": the /openai/v1 API) and which
    # deployment serves each model (the model's own name when it is not listed).
    api_version: str | None = None
    deployments: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return v

    @field_validator("auth")
    @classmethod
    def _auth(cls, v: str) -> str:
        auth_name(v)  # ValueError: not bearer, x-api-key or header:<Name>
        return v

    def model_set(self) -> frozenset[str] | None:
        if self.models is None and self.deployments:  # Azure: the mapped models
            return frozenset(self.deployments)
        if self.models is None or self.models == "*" or self.models == ["*"]:
            return None
        if isinstance(self.models, str):
            return frozenset([self.models])
        return frozenset(self.models)


class GroupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str]  # exact names or globs ("claude-*")
    strategy: Strategy


class RoutingConfig(BaseModel):
    """How the pool picks: `strategy` for every model, `groups` to choose per model group."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "balance"
    groups: list[GroupConfig] = Field(default_factory=list)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)  # model -> models to try next
    balance_refresh_interval: float = Field(default=300.0, ge=0)  # 0: never probe
    health_check_interval: float = Field(default=0.0, ge=0)  # active checks; 0: passive only
    discover_models: bool = True  # ask "every model" upstreams for their /v1/models
    discovery_interval: float = Field(default=600.0, gt=0)  # seconds between discoveries
    cooldown_base: float = Field(default=1.0, gt=0)
    cooldown_max: float = Field(default=60.0, gt=0)
    retry_after_max: float = Field(default=600.0, gt=0)
    key_park: float = Field(default=300.0, gt=0)
    key_park_max: float = Field(default=3600.0, gt=0)
    exhausted_park: float = Field(default=600.0, gt=0)
    min_balance_usd: float = 0.0
    latency_explore: float = Field(default=0.05, ge=0, le=1)

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: [t] if isinstance(t, str) else t for k, t in v.items()}
        return v

    def policy(self) -> PoolPolicy:
        return PoolPolicy(
            default_strategy=self.strategy,
            groups=[(tuple(g.models), g.strategy) for g in self.groups],
            fallbacks={k: tuple(t for t in v if t != k) for k, v in self.fallbacks.items()},
            cooldown_base=self.cooldown_base,
            cooldown_max=self.cooldown_max,
            retry_after_max=self.retry_after_max,
            key_park=self.key_park,
            key_park_max=self.key_park_max,
            exhausted_park=self.exhausted_park,
            min_balance_usd=self.min_balance_usd,
            latency_explore=self.latency_explore,
        )


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)


def _build(
    cfg: UpstreamConfig, name: str, api_key: str, account: str | None, source: str = "config"
) -> Upstream:
    models = cfg.model_set()
    modelless = cfg.serves_modelless if cfg.serves_modelless is not None else models is None
    egress = None
    if cfg.ca_bundle is not None or not cfg.verify or cfg.proxy is not None:
        proxy = expand_env(cfg.proxy) if cfg.proxy is not None else None
        ca = expand_env(cfg.ca_bundle) if cfg.ca_bundle is not None else None
        egress = Egress(ca, cfg.verify, proxy)
    azure = None
    aliases = dict(cfg.aliases)
    if cfg.provider == "azure":
        azure = AzureRoute(cfg.api_version or DEFAULT_API_VERSION, dict(cfg.deployments))
        if azure.v1:  # the v1 API takes the deployment as the body's model
            aliases = {**cfg.deployments, **aliases}
    try:
        return Upstream(
            name=name,
            base_url=expand_env(cfg.base_url),
            api_key=api_key,
            models=models,
            aliases=aliases,
            weight=cfg.weight,
            account=account,
            serves_modelless=modelless,
            provider=cfg.provider,
            source=source,
            rpm=cfg.rpm,
            tpm=cfg.tpm,
            manual_balance_usd=cfg.manual_balance_usd,
            headers={n: expand_env(v) for n, v in cfg.headers.items()},
            pass_headers=frozenset(cfg.pass_headers),
            auth=cfg.auth,
            apis=frozenset(cfg.apis),
            egress=egress,
            azure=azure,
        )
    except ConfigError:
        raise
    except ValueError as exc:  # a control character: the message names no value
        raise ConfigError(str(exc)) from None


def check_entry(cfg: UpstreamConfig) -> None:
    """What becomes a request line or header, after ${VAR} expansion: no control
    characters, valid header names. Errors name the upstream, never a value."""
    try:
        check_value(expand_env(cfg.base_url), "base_url")
        if cfg.api_key:
            check_value(expand_env(cfg.api_key), "api_key")
        check_headers({n: expand_env(v) for n, v in cfg.headers.items()}, cfg.pass_headers)
        check_network(cfg)
    except ValueError as exc:
        raise ConfigError(f"upstream {cfg.name}: {exc}") from None


def check_network(cfg: UpstreamConfig) -> None:
    """A proxy Tollway can use, a CA bundle that exists, Azure settings only on Azure."""
    if cfg.proxy is not None and expand_env(cfg.proxy) not in ("", "direct"):
        proxy = expand_env(cfg.proxy)
        check_value(proxy, "proxy")
        Proxy.parse(proxy)
    if cfg.ca_bundle is not None and not Path(expand_env(cfg.ca_bundle)).is_file():
        raise ValueError(f"ca_bundle {cfg.ca_bundle} is not a readable file")
    if cfg.provider != "azure" and (cfg.api_version is not None or cfg.deployments):
        raise ValueError("api_version and deployments are for provider: azure")


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
        if has_control(str(item["api_key"])):
            raise ConfigError(f"{path}: keys[{i}]: api_key contains a control character")
        out.append(
            {
                "name": str(item.get("name") or f"key-{i + 1}"),
                "mail": str(item.get("mail") or ""),
                "api_key": str(item["api_key"]),
            }
        )
    return out


def key_list_path(cfg: UpstreamConfig, base_dir: Path) -> Path | None:
    if not cfg.key_list:
        return None
    path = Path(expand_env(cfg.key_list))
    return path if path.is_absolute() else base_dir / path


def upstreams_from_keys(
    cfg: UpstreamConfig, entries: list[dict[str, str]], source: str
) -> list[Upstream]:
    """One upstream per key of a key list (JSON file or PocketBase): "<name>/<key name>",
    the key's mail (or the entry's `account`) as its account."""
    result = []
    for entry in entries:
        account = cfg.account or entry.get("mail") or None
        result.append(_build(cfg, f"{cfg.name}/{entry['name']}", entry["api_key"], account, source))
    return result


def upstreams_from_config(config: GatewayConfig, base_dir: Path) -> list[Upstream]:
    """The upstreams the file defines by itself (PocketBase entries are loaded by the
    manager, which falls back to their key list)."""
    result: list[Upstream] = []
    for cfg in config.upstreams:
        if cfg.pocketbase is not None:
            continue
        path = key_list_path(cfg, base_dir)
        if path is not None:
            result.extend(upstreams_from_keys(cfg, load_key_list(path), "key_list"))
        else:
            key = expand_env(cfg.api_key) if cfg.api_key else ""
            result.append(_build(cfg, cfg.name, key, cfg.account))
    check_unique(result)
    return result


def check_unique(upstreams: list[Upstream]) -> None:
    seen: set[str] = set()
    duplicates = set()
    for up in upstreams:
        if up.name in seen:
            duplicates.add(up.name)
        seen.add(up.name)
    if duplicates:
        raise ConfigError(f"duplicate upstream names: {', '.join(sorted(duplicates))}")


def read_config(path: Path) -> GatewayConfig:
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = GatewayConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    for model, targets in config.routing.fallbacks.items():
        if model in targets:
            raise ConfigError(f"{path}: model {model} falls back to itself")
    for cfg in config.upstreams:
        if cfg.ca_bundle is not None and not Path(expand_env(cfg.ca_bundle)).is_absolute():
            cfg.ca_bundle = str(path.parent / expand_env(cfg.ca_bundle))
        try:
            check_entry(cfg)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return config


def load_upstreams(path: Path | None) -> list[Upstream]:
    if path is None:
        return []
    return upstreams_from_config(read_config(path), path.parent)
