"""The documentation site: references generated from the code and current, a strict build that
fails on a broken link, and no page loading anything from another host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from docsgen import __main__ as docsgen  # noqa: E402
from docsgen import cli_ref, errors_ref, offline, settings_ref  # noqa: E402
from docsgen.common import cell  # noqa: E402


def test_committed_references_match_the_code() -> None:
    """What CI's `scripts/docs --check` enforces: every generated page is current."""
    problems = docsgen.stale(docsgen.generate())
    assert not problems, "docs/reference is stale; run `bash scripts/docs`:\n" + "\n".join(problems)


def test_a_stale_reference_is_reported(tmp_path: Path) -> None:
    pages = {"settings.md": settings_ref.render()}
    (tmp_path / "settings.md").write_text(pages["settings.md"].replace("TOLLWAY_PORT", "OLD"))
    problems = docsgen.stale(pages, tmp_path)
    assert len(problems) == 1 and "+| `TOLLWAY_PORT`" in problems[0]
    assert docsgen.stale(pages | {"errors.md": "x"}, tmp_path)[1].startswith("--- committed")


def test_every_setting_is_in_the_reference_with_its_description() -> None:
    from tollway.core.settings import Settings

    text = settings_ref.render()
    for name, field in Settings.model_fields.items():
        assert f"`TOLLWAY_{name.upper()}`" in text
        assert field.description and cell(field.description) in text

    class Undescribed(BaseSettings):
        described: int = Field(default=1, description="fine")
        bare: int = 2

    with pytest.raises(settings_ref.MissingDescription, match="bare"):
        settings_ref.render(Undescribed)


def test_every_cli_command_has_its_help_in_the_reference() -> None:
    import typer

    from tollway.cli.main import app

    text = cli_ref.render()
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="tollway")
    names = root.list_commands(ctx)  # type: ignore[attr-defined]
    assert {"serve", "migrate", "create-key", "upstreams", "rotate-secret"} <= set(names)
    for name in names:
        assert f"## tollway {name}\n" in text
    assert "## tollway upstreams add\n" in text and "--base-url" in text


def test_error_scan_finds_the_gateways_codes_and_refuses_unexplained_ones(tmp_path: Path) -> None:
    codes = errors_ref.collect()
    for code in ("invalid_api_key", "rate_limit_exceeded", "upstream_auth_failed", "not_found"):
        assert code in codes
    assert ("429", "tokens", "/v1") in codes["rate_limit_exceeded"]
    print(f"error codes found: {len(codes)}")

    (tmp_path / "tollway").mkdir()
    new = tmp_path / "tollway" / "new.py"
    new.write_text(
        "def f():\n    return GatewayError(418, 'teapot', 'x_error', 'brand_new_code')\n"
    )
    with pytest.raises(
        errors_ref.UnexplainedError, match="no MEANINGS entry for code `brand_new_code`"
    ):
        errors_ref.collect(tmp_path)
    new.write_text("def f(code):\n    return GatewayError(418, 'teapot', 'x_error', code)\n")
    with pytest.raises(errors_ref.UnexplainedError, match=r"tollway/new.py \(f\): .*RESOLVED"):
        errors_ref.collect(tmp_path)


def test_offline_check_flags_assets_from_other_hosts(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"></svg><a href="http://127.0.0.1:8000/">ok</a>'
        '<link rel="stylesheet" href="https://cdn.example.net/x.css">'
        '<img srcset="logo.png 1x, //img.example.net/l.png 2x">'
    )
    (tmp_path / "b.css").write_text("@font-face{src:url(https://fonts.example.net/f.woff2)}")
    found = offline.foreign_references(tmp_path)
    assert found == [
        "a.html: <link href=https://cdn.example.net/x.css>",
        "a.html: <img srcset=//img.example.net/l.png>",
        "b.css: https://fonts.example.net/f.woff2",
    ]


def _site_copy(tmp_path: Path) -> Path:
    """The site's sources in a temporary directory (docs/ without built output, mkdocs.yml and
    the included ARCHITECTURE.md)."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copy(ROOT / "ARCHITECTURE.md", tmp_path / "ARCHITECTURE.md")
    return tmp_path / "mkdocs.yml"


def test_the_site_builds_strictly_and_a_broken_link_fails_it(tmp_path: Path) -> None:
    config = _site_copy(tmp_path / "src")
    assert docsgen.build(tmp_path / "good", config) == 0
    built = tmp_path / "good"
    assert (built / "reference" / "settings.html").is_file()
    assert "TOLLWAY_DATABASE_URL" in (built / "reference" / "settings.html").read_text()
    assert "ui-dashboard.png" in {p.name for p in built.iterdir()}
    assert offline.foreign_references(built) == []

    page = config.parent / "docs" / "concepts" / "pool.md"
    text = page.read_text()
    page.write_text(text + "\nSee [the missing page](no-such-page.md).\n")
    assert docsgen.build(tmp_path / "bad", config) != 0
    page.write_text(text + "\nSee [a missing section](keys-and-limits.md#no-such-section).\n")
    assert docsgen.build(tmp_path / "bad-anchor", config) != 0


def test_screenshots_come_from_the_browser_tests(tmp_path: Path) -> None:
    artifacts, docs = tmp_path / "artifacts", tmp_path / "docs"
    artifacts.mkdir()
    docs.mkdir()
    (artifacts / "keys-desktop.png").write_bytes(b"new keys page")
    (docs / "ui-dashboard.png").write_bytes(b"committed")
    assert docsgen.refresh_screenshots(artifacts, docs) == ["ui-keys.png"]
    assert (docs / "ui-keys.png").read_bytes() == b"new keys page"
    assert (docs / "ui-dashboard.png").read_bytes() == b"committed"  # no new one: kept
    for name in docsgen.SCREENSHOTS:
        assert (ROOT / "docs" / name).is_file(), f"docs/{name} is shown by docs/web-ui.md"


def test_scripts_docs_check_passes() -> None:
    """The CI step itself: stale check, strict build into a temporary directory, offline check."""
    env = {**os.environ, "PY": sys.executable}
    done = subprocess.run(
        ["bash", "scripts/docs", "--check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "docs: built into" in done.stdout
