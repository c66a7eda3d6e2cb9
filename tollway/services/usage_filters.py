"""The filters every usage read takes, shared by the rollup reports and the raw records."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import ColumnElement


class UsageFilters(TypedDict, total=False):
    """Keyword filters: a UTC [start, end) range, a key, a public model, an upstream."""

    start: datetime | None
    end: datetime | None
    key_id: int | None
    model: str | None
    upstream: str | None


class RecordFilters(UsageFilters, total=False):
    status: str | None  # raw records only: see usage_records.status_filter
    request_id: str | None  # raw records only: the x-request-id a client reports


def where_terms(
    time: Any, lo: datetime | None, hi: datetime | None, equal: Iterable[tuple[Any, Any]]
) -> list[ColumnElement[bool]]:
    """WHERE terms: lo <= time < hi, and column == value for every value that is not None."""
    conds: list[ColumnElement[bool]] = []
    if lo is not None:
        conds.append(time >= lo)
    if hi is not None:
        conds.append(time < hi)
    conds += [col == value for col, value in equal if value is not None]
    return conds
