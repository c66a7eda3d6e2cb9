"""`python -m docsgen [--check]` (run by `bash scripts/docs`).

Default: writes the generated references into docs/reference/ and refreshes the UI screenshots
from test-artifacts/ui/ when the browser tests have made them. `--check`: writes nothing and
exits 1 when a committed reference differs from what the code generates now.
`--build SITE`: builds the site strictly into SITE; exits 1 on any MkDocs warning or when a
page or stylesheet references another host.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from docsgen import api_ref, cli_ref, errors_ref, offline, settings_ref
from docsgen.common import DOCS, REFERENCE, ROOT

PAGES: dict[str, Callable[[], str]] = {
    "settings.md": settings_ref.render,
    "cli.md": cli_ref.render,
    "admin-api.md": api_ref.render,
    "admin-openapi.json": api_ref.render_json,
    "errors.md": errors_ref.render,
}

# The site's screenshots: docs/<name> <- test-artifacts/ui/<shot> (written by tests/test_ui_*.py).
SCREENSHOTS = {
    "ui-dashboard.png": "dashboard-split-desktop.png",
    "ui-key-page.png": "key-page-desktop.png",
    "ui-request-detail.png": "usage-detail-desktop.png",
    "ui-playground.png": "playground-chat-desktop.png",
    "ui-keys.png": "keys-desktop.png",
    "ui-usage.png": "usage-desktop.png",
    "ui-upstreams.png": "upstreams-tested-desktop.png",
}


def generate() -> dict[str, str]:
    return {name: render() for name, render in PAGES.items()}


def stale(pages: dict[str, str], reference: Path = REFERENCE) -> list[str]:
    """A unified diff for each page whose committed file differs from `pages`."""
    problems = []
    for name, text in pages.items():
        path = reference / name
        old = path.read_text() if path.is_file() else ""
        if old != text:
            diff = difflib.unified_diff(
                old.splitlines(),
                text.splitlines(),
                f"committed {name}",
                f"generated {name}",
                lineterm="",
                n=1,
            )
            problems.append("\n".join(list(diff)[:40]))
    return problems


def refresh_screenshots(
    artifacts: Path = ROOT / "test-artifacts" / "ui", docs: Path = DOCS
) -> list[str]:
    """Copies the browser tests' desktop screenshots that exist; the committed ones stay else."""
    copied = []
    for target, shot in SCREENSHOTS.items():
        source = artifacts / shot
        if source.is_file():
            shutil.copyfile(source, docs / target)
            copied.append(target)
    return copied


def build(site: Path, config: Path = ROOT / "mkdocs.yml") -> int:
    """`mkdocs build --strict` (never --quiet: it hides the warnings strict mode counts), then
    the offline check of what it built."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about its successor
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)]
    done = subprocess.run([*cmd, "--site-dir", str(site)], env=env, cwd=config.parent)
    if done.returncode != 0:
        return done.returncode
    found = offline.foreign_references(site)
    for ref in found:
        print(f"references another host: {ref}", file=sys.stderr)
    return 1 if found else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="docsgen")
    parser.add_argument("--check", action="store_true", help="fail on a stale reference")
    parser.add_argument("--build", type=Path, metavar="SITE", help="build the site strictly")
    args = parser.parse_args(argv)
    if args.build is not None:
        return build(args.build.resolve())
    try:
        pages = generate()
    except (errors_ref.UnexplainedError, settings_ref.MissingDescription) as exc:
        print(f"cannot generate the references:\n{exc}", file=sys.stderr)
        return 1
    if args.check:
        problems = stale(pages)
        for diff in problems:
            print(diff, file=sys.stderr)
        if problems:
            print(
                "\ndocs/reference is stale: run `bash scripts/docs` and commit it.", file=sys.stderr
            )
            return 1
        return 0
    REFERENCE.mkdir(parents=True, exist_ok=True)
    for name, text in pages.items():
        (REFERENCE / name).write_text(text)
    copied = refresh_screenshots()
    print(f"wrote docs/reference/ ({len(pages)} files); screenshots refreshed: {copied or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
