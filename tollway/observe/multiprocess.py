"""Several workers, one /metrics: prometheus-client's multiprocess mode. The master picks the
directory before it forks (and before anything imports prometheus_client, which reads
`PROMETHEUS_MULTIPROC_DIR` at import); every worker writes its values to its own files there
and whichever worker answers a scrape sums them all."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class MetricsDir:
    path: Path
    temporary: bool

    def cleanup(self) -> None:
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def prepare(configured: Path | None) -> MetricsDir:
    """TOLLWAY_METRICS_DIR emptied of an earlier run's files (their counts are not ours), or
    a fresh temporary directory removed when the master exits."""
    if configured is None:
        found = MetricsDir(Path(tempfile.mkdtemp(prefix="tollway-metrics-")), True)
    else:
        configured.mkdir(parents=True, exist_ok=True)
        for old in configured.glob("*.db"):
            old.unlink()
        found = MetricsDir(configured, False)
    os.environ[ENV] = str(found.path)
    return found
