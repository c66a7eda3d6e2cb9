"""Fail when a file holds a secret that the committed `.secrets.baseline` does not list.

    python scripts/secret_scan.py            # every file git tracks (CI: a step of scripts/test)
    python scripts/secret_scan.py FILE...    # these files (the pre-commit hook)

detect-secrets with the baseline's own plugins and filters, offline. Unlike
`detect-secrets-hook` it never rewrites the baseline: a listed secret is matched by file, type
and hash, so lines moving elsewhere in a file do not fail the scan. A finding that is not a secret
(a test value, a hash): review it, then `detect-secrets scan --baseline .secrets.baseline` and
commit the baseline (CONTRIBUTING.md)."""

from __future__ import annotations

import sys

from detect_secrets import SecretsCollection
from detect_secrets.core import baseline
from detect_secrets.core.scan import get_files_to_scan

BASELINE = ".secrets.baseline"


def main(paths: list[str]) -> int:
    known = baseline.load(baseline.load_from_file(BASELINE), BASELINE)  # also its settings
    files = paths or list(get_files_to_scan("."))
    found = SecretsCollection()
    if len(files) < 50:
        # A few files (the hook, the tests): no process pool. Its workers can hang at exit
        # when the tests measure coverage in subprocesses.
        for name in files:
            found.scan_file(name)
    else:
        found.scan_files(*files)
    new = [(name, secret) for name, secret in found if secret not in known[name]]
    for name, secret in new:
        print(f"{name}:{secret.line_number}: {secret.type} (not in {BASELINE})")
    if new:
        print(f"{len(new)} possible secret(s). Remove them (and from git history: SECURITY.md).")
        return 1
    print(f"No new secrets in {len(files)} files.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
