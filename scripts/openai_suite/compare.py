"""Compare two runs of the same SDK tests test by test, and print what differs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

Outcomes = dict[str, str]  # pytest node id -> passed / failed / error / skipped / missing


@dataclass(frozen=True)
class Comparison:
    direct: Outcomes
    tollway: Outcomes

    @property
    def tests(self) -> list[str]:
        return sorted(set(self.direct) | set(self.tollway))

    def outcome(self, run: Outcomes, test: str) -> str:
        return run.get(test, "missing")

    @property
    def differing(self) -> list[str]:
        return [
            t for t in self.tests if self.outcome(self.direct, t) != self.outcome(self.tollway, t)
        ]

    @property
    def regressions(self) -> list[str]:
        """Tests that pass directly and not through Tollway: the suite fails on these."""
        return [
            t
            for t in self.tests
            if self.direct.get(t) == "passed" and self.tollway.get(t) != "passed"
        ]

    def counts(self) -> dict[str, int]:
        return {
            "tests": len(self.tests),
            "passed_directly": sum(v == "passed" for v in self.direct.values()),
            "passed_through_tollway": sum(v == "passed" for v in self.tollway.values()),
            "differing": len(self.differing),
        }


def _group(test: str) -> str:
    """tests/api_resources/chat/test_completions.py::TestX::test_y[strict] -> chat/completions"""
    path = test.split("::", 1)[0].removeprefix("tests/api_resources/").removesuffix(".py")
    return path.replace("test_", "")


def table(c: Comparison) -> str:
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    differing = set(c.differing)
    for t in c.tests:
        row = rows[_group(t)]
        row[0] += 1
        row[1] += c.direct.get(t) == "passed"
        row[2] += c.tollway.get(t) == "passed"
        row[3] += t in differing
    head = ("SDK tests", "tests", "passed directly", "passed through Tollway", "differing")
    body = [(g, *map(str, r)) for g, r in sorted(rows.items())]
    total = c.counts()
    body.append(
        (
            "total",
            *(str(total[k]) for k in ("tests", "passed_directly", "passed_through_tollway")),
            str(total["differing"]),
        )
    )
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), line]
    for r in body:
        if r[0] == "total":
            out.append(line)
        out.append(
            "  ".join(
                (v.ljust(w) if i == 0 else v.rjust(w))
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    skipped = sum(v == "skipped" for v in c.direct.values())
    if skipped:
        out.append(f"({skipped} skipped by the SDK's own tests directly)")
    if c.differing:
        out += ["", "Differing tests (directly -> through Tollway):"]
        out += [
            f"  {c.outcome(c.direct, t):>7} -> {c.outcome(c.tollway, t):<7} {t}"
            for t in c.differing
        ]
    return "\n".join(out)
