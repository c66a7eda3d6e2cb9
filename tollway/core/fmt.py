"""How people read numbers, shared by the CLI and the UI: "—" for unknown (never 0), thousands
separators, and small dollar amounts with enough digits to tell them apart ($0.00012)."""

from __future__ import annotations

import math

UNKNOWN = "—"


def count(value: float | int | None) -> str:
    """12,345; a fraction keeps one decimal (12.5); None is unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def usd(value: float | None) -> str:
    """$1,234.50 from a dollar up; below it up to 4 significant digits and at least 2
    decimals ($0.50, $0.053, $0.00012): a request's cost must not read as $0.0000."""
    if value is None or math.isnan(value):
        return UNKNOWN
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v == 0:
        return "$0.00"
    if v >= 1:
        return f"{sign}${v:,.2f}"
    decimals = min(max(2, 3 - math.floor(math.log10(v))), 10)
    text = f"{v:.{decimals}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    if float(text or 0) == 0:  # below $0.0000000001: say so rather than print $0.00
        return f"{sign}<$0.0000000001"
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


def usd_total(value: float | None, requests: int) -> str:
    """A summed cost. The rollups add an unpriced request as 0, so a sum of exactly 0 over
    requests means no request in it had a price: unknown, not free."""
    if value is None or (value == 0 and requests > 0):
        return UNKNOWN
    return usd(value)
