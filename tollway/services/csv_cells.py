"""CSV cells that a spreadsheet cannot run: text starting with = + - @ (or tab/CR, per OWASP)
gets a leading `'` so Excel/LibreOffice/Sheets show it instead of evaluating a formula.

Numbers are written as numbers, negative ones included (they come from numeric columns, never
from a client), and floats in fixed-point notation (2e-07 is 0.0000002): a spreadsheet reads
both as numbers. Only text is escaped, so a model named "-1" is exported as '-1.
"""

from __future__ import annotations

from decimal import Decimal

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str | int:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return fixed(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def fixed(value: float) -> str:
    """The shortest decimal that reads back as `value`, without an exponent."""
    if value != value or value in (float("inf"), float("-inf")):
        return ""
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
