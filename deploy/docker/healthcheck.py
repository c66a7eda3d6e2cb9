"""The container's health check: exit 0 when this instance's /readyz answers 200, else 1.

Standard library only (the image has no curl); reads the port the gateway listens on from
TOLLWAY_PORT, as `tollway serve` does.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("TOLLWAY_PORT", "8000")
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except urllib.error.HTTPError as err:  # 503: unready or draining; the body says why
        print(err.read().decode("utf-8", "replace")[:500], file=sys.stderr)
        return 1
    except OSError as err:  # not listening (yet), or no answer in time
        print(f"{url}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
