"""`${VAR}` in tollway.yaml takes a value from `.env` when the environment lacks it (as
.env.example promises), the environment winning; an unset one stops `tollway serve` with one
line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tollway.upstreams.config import ConfigError, expand_env, load_upstreams

YAML = """upstreams:
  - name: local
    base_url: http://127.0.0.1:9/v1
    api_key: ${QS_UPSTREAM_KEY}
    models: [m]
"""


def test_env_file_fills_in_what_the_environment_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QS_UPSTREAM_KEY", raising=False)
    with pytest.raises(ConfigError, match="QS_UPSTREAM_KEY is not set"):
        expand_env("${QS_UPSTREAM_KEY}")
    (tmp_path / ".env").write_text("TOLLWAY_PORT=8000\nQS_UPSTREAM_KEY=from-dotenv\n")
    (tmp_path / "tollway.yaml").write_text(YAML)
    [upstream] = load_upstreams(Path("tollway.yaml"))
    assert upstream.api_key == "from-dotenv"
    assert expand_env("${QS_UPSTREAM_KEY:-default}") == "from-dotenv"

    # An edited .env is read again.
    (tmp_path / ".env").write_text("QS_UPSTREAM_KEY=edited-value-longer\n")
    assert expand_env("${QS_UPSTREAM_KEY}") == "edited-value-longer"

    # A real environment variable wins over .env.
    monkeypatch.setenv("QS_UPSTREAM_KEY", "from-environment")
    assert expand_env("${QS_UPSTREAM_KEY}") == "from-environment"


def test_serve_names_an_unset_variable_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "tollway.yaml").write_text(YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLWAY_", "QS_"))}
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "serve", "--port", "9"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "error: tollway.yaml: upstream local: environment variable QS_UPSTREAM_KEY is not set"
        " (in the environment or .env)\n"
    )
    assert "Traceback" not in done.stdout
