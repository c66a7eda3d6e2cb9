"""Upstreams from the YAML file and the seed's key-list.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollway.upstreams.config import ConfigError, expand_env, load_upstreams


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_upstreams_with_env_keys_aliases_and_all_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "supersecretkey")
    cfg = write(
        tmp_path / "t.yaml",
        """
upstreams:
  - name: local-vllm
    base_url: http://127.0.0.1:8001/v1/
    api_key: ${VLLM_API_KEY}
    models: [meta-llama/Llama-3.2-1B-Instruct]
    aliases: {llama: meta-llama/Llama-3.2-1B-Instruct}
    weight: 2
  - name: ollama
    base_url: http://127.0.0.1:11434/v1
""",
    )
    vllm, ollama = load_upstreams(cfg)
    assert vllm.base_url == "http://127.0.0.1:8001/v1"
    assert vllm.auth_header == b"Bearer supersecretkey"
    assert (
        vllm.serves("llama") and vllm.upstream_model("llama") == "meta-llama/Llama-3.2-1B-Instruct"
    )
    assert not vllm.serves("other") and not vllm.serves(None)
    assert vllm.weight == 2
    assert ollama.models is None and ollama.serves("anything") and ollama.serves(None)
    assert ollama.auth_header == b""


def test_seed_key_list_loads_as_keys_of_one_base_url(tmp_path: Path) -> None:
    write(
        tmp_path / "key-list.json",
        """{"keys": [
            {"name": "Vercel 1", "mail": "a@example.com", "api_key": "vck_one"},
            {"name": "Vercel 2", "mail": "a@example.com", "api_key": "vck_two"},
            {"api_key": "vck_three"}
        ]}""",
    )
    cfg = write(
        tmp_path / "t.yaml",
        """
upstreams:
  - name: vercel
    base_url: https://ai-gateway.example/v1
    key_list: key-list.json
    models: "*"
""",
    )
    ups = load_upstreams(cfg)
    assert [u.name for u in ups] == ["vercel/Vercel 1", "vercel/Vercel 2", "vercel/key-3"]
    assert [u.account for u in ups] == ["a@example.com", "a@example.com", None]
    assert ups[1].api_key == "vck_two" and ups[0].models is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upstreams:\n  - name: x\n    base_url: ftp://x\n", "base_url"),
        (
            "upstreams:\n  - name: x\n    base_url: http://x\n    api_key: ${NOPE_UNSET}\n",
            "NOPE_UNSET",
        ),
        ("- just a list\n", "mapping"),
        ("upstreams: [\n", "cannot read"),
        (
            "upstreams:\n  - {name: x, base_url: 'http://a'}\n  - {name: x, base_url: 'http://b'}\n",
            "duplicate",
        ),
        ("upstreams:\n  - {name: x, base_url: 'http://a', key_list: missing.json}\n", "key list"),
        ("upstreams:\n  - {name: x, base_url: 'http://a', bogus: 1}\n", "bogus"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_upstreams(write(tmp_path / "bad.yaml", text))


def test_bad_key_list(tmp_path: Path) -> None:
    write(tmp_path / "k.json", '{"keys": [{"name": "no key"}]}')
    cfg = write(
        tmp_path / "t.yaml", "upstreams:\n  - {name: v, base_url: 'http://a', key_list: k.json}\n"
    )
    with pytest.raises(ConfigError, match="no api_key"):
        load_upstreams(cfg)
    write(tmp_path / "k.json", '{"nokeys": 1}')
    with pytest.raises(ConfigError, match="keys"):
        load_upstreams(cfg)


def test_env_default_and_no_config() -> None:
    assert expand_env("${TOLLWAY_SURELY_UNSET:-fallback}") == "fallback"
    assert load_upstreams(None) == []
