"""README's quick start, followed literally: its commands, YAML, `.env` line and Python example
are read out of README.md (so README cannot drift) and run in a fresh copy of the repository,
against a fake upstream on 127.0.0.1.

Only addresses change (the fake upstream's and the gateway's free ports) and the installation is
reused: the copy's `.venv/bin/tollway` is this venv's, so `bash scripts/run` finds nothing to
install."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_upstream import FakeUpstream
from tests.servers import free_port, wait_ready

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.S | re.M)


def quick_start() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Quick start")
    return readme[start : readme.index("\n## ", start)]


def blocks(section: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block, the list item's indentation removed."""
    found = []
    for m in BLOCK.finditer(section):
        indent = len(m.group(1))
        code = "".join(line[indent:] for line in m.group(3).splitlines(keepends=True))
        found.append((m.group(2), code))
    return found


def one(found: list[tuple[str, str]], lang: str, contains: str) -> str:
    matches = [code for lg, code in found if lg == lang and contains in code]
    assert len(matches) == 1, f"README quick start: one {lang} block with {contains!r}"
    return matches[0]


def copy_repo(dest: Path) -> None:
    """What a fresh clone has, plus uncommitted edits: the files git tracks or would track."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        src = REPO / raw.decode()
        if src.is_file():
            target = dest / raw.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def reuse_install(repo: Path) -> None:
    """A `.venv` whose `tollway` is this venv's, stamped as installed (as scripts/run stamps)."""
    venv = repo / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "bin" / "tollway").symlink_to(Path(sys.executable).parent / "tollway")
    # scripts/run's stamp: sha256 of pyproject.toml followed by the runtime lock. Without pip in
    # this venv a wrong stamp fails loudly (pip missing) instead of installing anything.
    digest = hashlib.sha256(
        (repo / "pyproject.toml").read_bytes() + (repo / "requirements/runtime.lock").read_bytes()
    ).hexdigest()
    (venv / ".tollway-run-stamp").write_text(digest + "\n")


def test_readme_quick_start_as_written(tmp_path: Path) -> None:
    section = quick_start()
    found = blocks(section)
    copy_cmds = one(found, "bash", "cp ")
    yaml_text = one(found, "yaml", "upstreams:")
    dotenv = one(found, "dotenv", "=")
    create_cmd = one(found, "bash", "create-key")
    example = one(found, "python", "OpenAI(")
    assert "`bash scripts/run`" in section
    stats_cmd = re.search(r"`(\.venv/bin/tollway key-stats <id>)`", section)
    list_cmd = re.search(r"`(\.venv/bin/tollway list-keys)`", section)
    assert stats_cmd and list_cmd, "README quick start: key-stats and list-keys commands"

    name, key = dotenv.strip().split("=", 1)
    model = re.search(r"models: \[(.+)\]", yaml_text)
    assert model is not None
    upstream = FakeUpstream("quickstart", api_key=key).start()
    upstream.behaviour.chunks = 3  # "Hello from upstream", one word a chunk

    repo = tmp_path / "tollway"
    copy_repo(repo)
    reuse_install(repo)
    # Nothing from this environment may stand in for the files: the key must come from .env.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_") and k != name}

    def sh(script: str) -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    sh(copy_cmds)
    readme_upstream = "http://127.0.0.1:8001/v1"
    assert readme_upstream in yaml_text
    (repo / "tollway.yaml").write_text(yaml_text.replace(readme_upstream, upstream.base_url))
    with (repo / ".env").open("a") as f:
        f.write("\n" + dotenv)

    port = free_port()
    log = (tmp_path / "run.log").open("wb")
    server = subprocess.Popen(
        ["bash", "scripts/run", "--port", str(port)],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}", 60)
        except RuntimeError:
            pytest.fail((tmp_path / "run.log").read_text())
        created = sh(create_cmd)
        client_key = re.search(r"\b(tw-[A-Za-z0-9_-]+)", created)
        key_id = re.search(r"Created key (\d+)", created)
        assert client_key and key_id, created

        readme_gateway = "http://127.0.0.1:8000/v1"
        assert readme_gateway in example and '"tw-..."' in example
        code = example.replace(readme_gateway, f"http://127.0.0.1:{port}/v1")
        code = code.replace('"tw-..."', repr(client_key.group(1)))
        answer = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout == "Hello from upstream "
        # The upstream got the key from .env, and the model README names.
        seen = [s for s in upstream.seen if s.path.endswith("/chat/completions")]
        assert len(seen) == 1
        assert seen[0].headers["Authorization"] == f"Bearer {key}"
        assert model.group(1).encode() in seen[0].body

        assert "My App" in sh(list_cmd.group(1))
        # Usage rows are written in the background: wait for this one (bounded).
        deadline = time.monotonic() + 20
        while True:
            stats = sh(stats_cmd.group(1).replace("<id>", key_id.group(1)))
            if re.search(r"Requests: 1\b", stats) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert re.search(r"Requests: 1\b", stats), stats
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        upstream.stop()
