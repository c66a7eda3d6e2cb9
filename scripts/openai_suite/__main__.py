"""The openai SDK's own resource tests, run directly against a Prism mock of spec.yaml and then
through a real Tollway in front of the same mock; compared test by test.

Exit status: 0 when every test that passes directly passes through Tollway too; 1 when one
does not (or the direct run passed nothing: the mock is wrong); 3 when the tools could not be
installed or started (no node/npm, no package registry): no verdict either way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .compare import Comparison, Outcomes, table
from .install import SetupError, install, openai_pin
from .servers import (
    clean_env,
    die_with_parent,
    prepare_tollway,
    start_prism,
    start_tollway,
    wait_prism,
)

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"
# The SDK test files that spec.yaml covers: all of their tests pass against it directly.
SUITE = [
    "tests/api_resources/test_models.py",
    "tests/api_resources/chat/test_completions.py",
    "tests/api_resources/chat/completions/test_messages.py",
    "tests/api_resources/test_completions.py",
    "tests/api_resources/test_embeddings.py",
    "tests/api_resources/test_moderations.py",
    "tests/api_resources/test_files.py",
    "tests/api_resources/test_batches.py",
    "tests/api_resources/test_images.py",
    "tests/api_resources/audio/test_transcriptions.py",
    "tests/api_resources/audio/test_translations.py",
]
RUN_TIMEOUT = 300.0  # one pytest run of the SDK's tests; a hang ends it as a failure


def run_sdk(
    python: Path,
    sdk_dir: Path,
    tests: list[str],
    base_url: str,
    out: Path,
    key: str | None = None,
    select: str | None = None,
) -> tuple[Outcomes, str]:
    """One pytest run of the SDK's tests against base_url; their outcomes and pytest's output."""
    outcomes = out.with_suffix(".json")
    env = {k: v for k, v in clean_env().items() if not k.startswith("OPENAI_")}
    env |= {
        "TEST_API_BASE_URL": base_url,
        "OPENAI_SUITE_OUTCOMES": str(outcomes),
        "PYTHONPATH": str(PLUGIN_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if key is not None:
        env["OPENAI_SUITE_API_KEY"] = key
    # The SDK's own pytest settings hold, less its addopts (`-n auto` needs pytest-xdist).
    cmd = [
        str(python),
        "-m",
        "pytest",
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "-p",
        "sdk_plugin",
        "-o",
        "addopts=--tb=short",
        *(["-k", select] if select else []),
        *tests,
    ]
    try:
        done = subprocess.run(
            cmd,
            cwd=sdk_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            preexec_fn=die_with_parent,
        )
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        got = [
            b.decode(errors="replace") if isinstance(b, bytes) else b or ""
            for b in (exc.stdout, exc.stderr)
        ]
        output = f"{''.join(got)}\n(stopped after {RUN_TIMEOUT:.0f} s)"
    out.write_text(output)
    if not outcomes.exists():
        return {}, output
    return json.loads(outcomes.read_text()), output


def keep_logs(work: Path, dest: Path) -> None:
    """The servers' logs and both pytest outputs of the last run, for a look afterwards (the
    database and its secrets stay in the temporary directory, which goes)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("prism.log", "tollway.log", "direct.txt", "tollway.txt"):
        if (work / name).exists():
            shutil.copyfile(work / name, dest / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/openai-suite", description=__doc__.split("\n\n")[0])
    ap.add_argument("tests", nargs="*", default=SUITE, help="SDK test paths (default: the suite)")
    ap.add_argument("-k", dest="select", help="pytest -k expression for both runs")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "openai-suite")
    ap.add_argument("--report", type=Path, help="write the counts and outcomes as JSON here")
    ap.add_argument("--show-output", action="store_true", help="print both pytest outputs")
    args = ap.parse_args(argv)

    started = last = time.monotonic()
    laps: list[str] = []

    def lap(what: str) -> None:
        nonlocal last
        now = time.monotonic()
        laps.append(f"{what} {now - last:.0f} s")
        last = now

    try:
        tools = install(args.cache)
    except SetupError as exc:
        print(f"openai-suite: cannot set up: {exc}", file=sys.stderr)
        return 3
    lap("installs")
    version = openai_pin()[0]
    print(f"openai {version}: {len(args.tests)} SDK test file(s), twice", flush=True)

    with tempfile.TemporaryDirectory(prefix="openai-suite-") as tmp:
        work = Path(tmp)
        prism, prism_url = start_prism(tools.prism, work)
        gateway = None
        try:
            env, key = prepare_tollway(work, prism_url)  # while Prism starts
            wait_prism(prism, prism_url)
            lap("servers set up")
            run = (tools.python, tools.sdk_dir, args.tests)
            direct, direct_out = run_sdk(*run, prism_url, work / "direct.txt", select=args.select)
            lap("directly")
            gateway, tollway_url = start_tollway(env, work, key)
            via, via_out = run_sdk(*run, tollway_url, work / "tollway.txt", key, args.select)
            lap("Tollway started and through it")
        except SetupError as exc:
            print(f"openai-suite: cannot start the servers: {exc}", file=sys.stderr)
            return 3
        finally:
            if gateway is not None:
                gateway.stop()
            prism.stop()
        log = work / "tollway.log"
        gateway_log = log.read_text(errors="replace") if log.exists() else ""
        keep_logs(work, args.cache / "last-run")

    result = Comparison(direct, via)
    if args.show_output:
        print(f"\n--- directly against Prism ---\n{direct_out}")
        print(f"--- through Tollway ---\n{via_out}")
    print()
    print(table(result))
    print(f"\n{time.monotonic() - started:.0f} s in all: {', '.join(laps)}")
    if args.report is not None:
        report = {
            "openai": version,
            "files": args.tests,
            **result.counts(),
            "direct": direct,
            "tollway": via,
        }
        args.report.write_text(json.dumps(report, indent=1, sort_keys=True))

    if not any(v == "passed" for v in direct.values()):
        print("\nFAILED: no SDK test passed directly: the mock or the setup is wrong.")
        print(direct_out[-4000:])
        return 1
    if result.regressions:
        print(f"\nFAILED: {len(result.regressions)} test(s) pass directly but not through Tollway.")
        print(f"--- pytest through Tollway (end) ---\n{via_out[-6000:]}")
        print(f"--- tollway serve's log (end) ---\n{gateway_log[-3000:]}")
        return 1
    print("\nOK: every test that passes directly passes through Tollway.")
    return 0


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`: the servers are stopped


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(main())
