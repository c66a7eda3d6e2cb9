"""Secrets stay out of git: what .gitignore covers, and the secret scan (CI's `secret scan` step
and the pre-commit hook) failing on a planted fake secret, in a throwaway repository."""

from __future__ import annotations

import random
import shutil
import string
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]


def test_gitignore_covers_what_holds_secrets() -> None:
    secret_files = [
        ".env",
        ".env.production",
        "tollway.yaml",
        "tollway.db",
        "tollway.db-wal",
        "tollway.db-journal",
        "tollway.db.migrate.lock",
        "tollway.db.secret",
        "tollway.secret",
        "tollway-spool/events-1.jsonl",
        "config/key-list.json",
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *secret_files],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == secret_files
    examples = ["tollway.example.yaml", ".env.example"]
    check = subprocess.run(["git", "check-ignore", "--no-index", *examples], cwd=REPO)
    assert check.returncode == 1  # none of them ignored


def _scan(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/secret_scan.py"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_secret_scan_fails_on_a_planted_secret(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts/secret_scan.py", repo / "scripts")
    shutil.copy(REPO / ".secrets.baseline", repo)
    (repo / "app.py").write_text('GREETING = "hello"\n')
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "clean"], cwd=repo, check=True)
    clean = _scan(repo)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    # A fake AWS key, made here so no secret-looking literal sits in this repository.
    fake = "AKIA" + "".join(random.choices(string.ascii_uppercase + string.digits, k=16))
    subprocess.run([*GIT, "checkout", "-q", "-b", "planted"], cwd=repo, check=True)
    (repo / "settings_local.py").write_text(f'AWS_ACCESS_KEY_ID = "{fake}"\n')
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "oops"], cwd=repo, check=True)
    planted = _scan(repo)
    assert planted.returncode == 1, planted.stdout + planted.stderr
    assert "settings_local.py:1: AWS Access Key" in planted.stdout
    assert fake not in planted.stdout  # the report names the place, never the secret

    # The pre-commit hook's form (files given) catches it before it is committed, too.
    hook = subprocess.run(
        [sys.executable, "scripts/secret_scan.py", "settings_local.py", "app.py"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert hook.returncode == 1 and "settings_local.py:1" in hook.stdout


def test_pre_commit_runs_the_ci_checks() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    entries = {h["id"]: h["entry"] for repo in config["repos"] for h in repo["hooks"]}
    assert entries == {
        "ruff": ".venv/bin/ruff check --force-exclude",
        "ruff-format": ".venv/bin/ruff format --force-exclude",
        "mypy": ".venv/bin/mypy tollway",
        "detect-secrets": ".venv/bin/python scripts/secret_scan.py",
    }
    ci = (REPO / "scripts/test").read_text()
    assert 'step "secret scan" python scripts/secret_scan.py' in ci
