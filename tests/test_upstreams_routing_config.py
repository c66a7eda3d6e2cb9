"""The `routing:` block and the per-upstream pool fields of the YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollway.upstreams.config import ConfigError, read_config, upstreams_from_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


def test_routing_block_becomes_the_pool_policy(tmp_path: Path) -> None:
    cfg = read_config(
        write(
            tmp_path,
            """
upstreams:
  - {name: a, base_url: "http://127.0.0.1:1/v1", models: [gpt-4o], rpm: 60, tpm: 90000,
     manual_balance_usd: 12.5, provider: openrouter}
routing:
  strategy: weighted
  groups:
    - {models: ["claude-*", exact], strategy: latency}
  fallbacks: {gpt-4o: gpt-4o-mini, big: [medium, small]}
  min_balance_usd: 0.5
""",
        )
    )
    policy = cfg.routing.policy()
    assert policy.strategy_for("claude-3-haiku") == "latency"
    assert policy.strategy_for("exact") == "latency"
    assert policy.strategy_for("other") == "weighted" and policy.strategy_for(None) == "weighted"
    assert policy.fallbacks == {"gpt-4o": ("gpt-4o-mini",), "big": ("medium", "small")}
    assert policy.min_balance_usd == 0.5
    (up,) = upstreams_from_config(cfg, tmp_path)
    assert (up.rpm, up.tpm, up.manual_balance_usd) == (60, 90000, 12.5)
    assert up.probe_kind() == "manual"  # a manual balance overrides the provider's probe


@pytest.mark.parametrize(
    "routing",
    [
        "{strategy: fastest}",
        "{groups: [{models: [x], strategy: nope}]}",
        "{fallbacks: {a: [a]}}",
        "{cooldown_base: 0}",
        "{unknown_knob: 1}",
    ],
)
def test_bad_routing_is_a_config_error(tmp_path: Path, routing: str) -> None:
    with pytest.raises(ConfigError):
        read_config(write(tmp_path, f"upstreams: []\nrouting: {routing}\n"))


def test_probe_kind_from_provider_or_host(tmp_path: Path) -> None:
    cfg = read_config(
        write(
            tmp_path,
            """
upstreams:
  - {name: v, base_url: "https://ai-gateway.vercel.sh/v1"}
  - {name: o, base_url: "https://openrouter.ai/api/v1"}
  - {name: p, base_url: "http://127.0.0.1:9/v1", provider: vercel}
  - {name: l, base_url: "http://127.0.0.1:8/v1"}
""",
        )
    )
    kinds = {u.name: u.probe_kind() for u in upstreams_from_config(cfg, tmp_path)}
    assert kinds == {"v": "vercel", "o": "openrouter", "p": "vercel", "l": None}
