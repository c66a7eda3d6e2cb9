"""Parameter types shared by the admin routes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator

ID_MAX = 2**31 - 1  # the database's INTEGER range
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _iso_only(v: Any) -> Any:
    # pydantic would read "0.5" as unix seconds; the schema promises ISO 8601 date-times.
    if isinstance(v, str) and _NUMBER.fullmatch(v.strip()):
        raise ValueError("expected an ISO 8601 date-time")
    return v


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]
