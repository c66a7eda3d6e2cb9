"""/usage: reports over the hourly rollups, raw records and CSV export
(a thin face over tollway.services.usage)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from tollway.admin.deps import Engine
from tollway.admin.params import ID_MAX, IsoDateTime
from tollway.services import usage
from tollway.services.usage_models import MAX_GROUPS

router = APIRouter(prefix="/usage", tags=["usage"])

Start = Annotated[
    IsoDateTime | None, Query(description="Range start (ISO 8601; UTC when no offset).")
]
End = Annotated[IsoDateTime | None, Query(description="Range end, exclusive.")]
KeyFilter = Annotated[int | None, Query(ge=0, le=ID_MAX, description="0 = requests without a key.")]
ModelFilter = Annotated[str | None, Query(max_length=300, description='Public model; "" = none.')]
UpstreamFilter = Annotated[str | None, Query(max_length=200, description='Upstream; "" = none.')]
OrderBy = Annotated[usage.Order, Query(description="What to rank by.")]
Limit = Annotated[int, Query(ge=1, le=MAX_GROUPS)]
BucketQ = Annotated[usage.Bucket, Query(description="hour or UTC day.")]
StatusFilter = Annotated[
    str | None,
    Query(max_length=5, description="A code (429), a class (5xx), `ok` (<400) or `error`."),
]
RequestIdFilter = Annotated[
    str | None,
    Query(max_length=64, description="Only the request with this id (its `x-request-id`)."),
]


@router.get("", response_model=usage.UsageReport, summary="Usage report over a range")
async def report(
    engine: Engine,
    start: Start = None,
    end: End = None,
    bucket: BucketQ = "day",
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    upstream: UpstreamFilter = None,
    top: Limit = 10,
) -> usage.UsageReport:
    """Totals, a time series and the top keys, models, upstreams and endpoints.
    Defaults to the last 30 days (day buckets) or 24 hours (hour buckets)."""
    return await usage.report(
        engine,
        start=start,
        end=end,
        bucket=bucket,
        key_id=key_id,
        model=model,
        upstream=upstream,
        top=top,
    )


@router.get("/totals", response_model=usage.UsageStats, summary="Totals over a range")
async def totals(
    engine: Engine,
    start: Start = None,
    end: End = None,
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    upstream: UpstreamFilter = None,
) -> usage.UsageStats:
    """All time unless start/end are given (whole hours)."""
    return await usage.totals(
        engine, start=start, end=end, key_id=key_id, model=model, upstream=upstream
    )


@router.get("/series", response_model=list[usage.UsagePoint], summary="Time series")
async def series(
    engine: Engine,
    start: Start = None,
    end: End = None,
    bucket: BucketQ = "hour",
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    upstream: UpstreamFilter = None,
) -> list[usage.UsagePoint]:
    """One point per hour or day in the range, empty ones included."""
    return await usage.timeseries(
        engine,
        start=start,
        end=end,
        bucket=bucket,
        key_id=key_id,
        model=model,
        upstream=upstream,
    )


@router.get("/keys", response_model=list[usage.KeyUsage], summary="Usage per key")
async def per_key(
    engine: Engine,
    start: Start = None,
    end: End = None,
    model: ModelFilter = None,
    upstream: UpstreamFilter = None,
    order: OrderBy = "requests",
    limit: Limit = 100,
) -> list[usage.KeyUsage]:
    return await usage.by_key(
        engine, start=start, end=end, model=model, upstream=upstream, order=order, limit=limit
    )


@router.get("/models", response_model=list[usage.UsageGroup], summary="Usage per model")
async def per_model(
    engine: Engine,
    start: Start = None,
    end: End = None,
    key_id: KeyFilter = None,
    upstream: UpstreamFilter = None,
    order: OrderBy = "requests",
    limit: Limit = 100,
) -> list[usage.UsageGroup]:
    return await usage.by_model(
        engine, start=start, end=end, key_id=key_id, upstream=upstream, order=order, limit=limit
    )


@router.get("/upstreams", response_model=list[usage.UsageGroup], summary="Usage per upstream")
async def per_upstream(
    engine: Engine,
    start: Start = None,
    end: End = None,
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    order: OrderBy = "requests",
    limit: Limit = 100,
) -> list[usage.UsageGroup]:
    return await usage.by_upstream(
        engine, start=start, end=end, key_id=key_id, model=model, order=order, limit=limit
    )


@router.get("/endpoints", response_model=list[usage.UsageGroup], summary="Usage per endpoint")
async def per_endpoint(
    engine: Engine,
    start: Start = None,
    end: End = None,
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    upstream: UpstreamFilter = None,
    order: OrderBy = "requests",
    limit: Limit = 100,
) -> list[usage.UsageGroup]:
    return await usage.by_endpoint(
        engine,
        start=start,
        end=end,
        key_id=key_id,
        model=model,
        upstream=upstream,
        order=order,
        limit=limit,
    )


@router.get("/records", response_model=usage.RecordPage, summary="Raw usage records")
async def records(
    engine: Engine,
    start: Start = None,
    end: End = None,
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    upstream: UpstreamFilter = None,
    status: StatusFilter = None,
    request_id: RequestIdFilter = None,
    cursor: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=usage.MAX_RECORDS_PAGE)] = 50,
) -> usage.RecordPage:
    """Newest first; exact times, not whole hours."""
    return await usage.list_records(
        engine,
        start=start,
        end=end,
        key_id=key_id,
        model=model,
        upstream=upstream,
        status=status,
        request_id=request_id,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/records/totals", response_model=usage.UsageStats, summary="Totals of the filtered records"
)
async def record_totals(
    engine: Engine,
    start: Start = None,
    end: End = None,
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    upstream: UpstreamFilter = None,
    status: StatusFilter = None,
    request_id: RequestIdFilter = None,
) -> usage.UsageStats:
    """Sums over exactly the records `/usage/records` lists for the same filters."""
    return await usage.filtered_totals(
        engine,
        start=start,
        end=end,
        key_id=key_id,
        model=model,
        upstream=upstream,
        status=status,
        request_id=request_id,
    )


@router.get(
    "/records/{request_id}", response_model=usage.RequestDetail, summary="One request in full"
)
async def record(
    engine: Engine,
    request_id: Annotated[str, Path(max_length=64, description="Its `x-request-id`.")],
) -> usage.RequestDetail:
    """Timing (limits admitted, upstream first byte, total), every failed attempt with its
    upstream, the error message, tokens, cost and fallback."""
    return await usage.get_record(engine, request_id)


@router.get(
    "/export.csv",
    response_class=StreamingResponse,
    summary="Raw usage records as CSV",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def export(
    engine: Engine,
    start: Start = None,
    end: End = None,
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    upstream: UpstreamFilter = None,
    status: StatusFilter = None,
    request_id: RequestIdFilter = None,
) -> StreamingResponse:
    """Streamed in the order written, one header line; filters as for /usage/records."""
    chunks = await usage.export_csv(
        engine,
        start=start,
        end=end,
        key_id=key_id,
        model=model,
        upstream=upstream,
        status=status,
        request_id=request_id,
    )
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="tollway-usage.csv"'},
    )
