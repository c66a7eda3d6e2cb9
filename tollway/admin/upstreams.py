"""/upstreams: database upstreams (CRUD, test call) and the live pool (status, balances);
a thin face over tollway.services.upstreams. Keys are write-only: responses show a hint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response

from tollway.admin.deps import Engine, get_runtime
from tollway.admin.params import ID_MAX
from tollway.services import upstream_tests
from tollway.services import upstreams as ups
from tollway.services.errors import Invalid
from tollway.upstreams.crypto import SecretBox, SecretKeyMissing, secret_box

router = APIRouter(prefix="/upstreams", tags=["upstreams"])

UpstreamId = Annotated[int, Path(ge=1, le=ID_MAX, description="The upstream's numeric id.")]


def _box(request: Request) -> SecretBox:
    try:
        return secret_box(get_runtime(request).settings)
    except SecretKeyMissing as exc:
        raise Invalid(str(exc)) from None


async def _changed(request: Request) -> None:
    """This instance reloads its pool at once; others follow the revision bump."""
    manager = get_runtime(request).upstreams
    if manager is not None:
        await manager.reload_db()


# Fixed paths before /{upstream_id}.
@router.get("/status", response_model=list[ups.UpstreamStatus], summary="Live pool status")
async def status(request: Request) -> list[ups.UpstreamStatus]:
    """Every upstream the gateway routes to, whatever its source: health, cooldown,
    in-flight requests, latency and balance."""
    return await ups.upstream_status(get_runtime(request).pool)


@router.post(
    "/refresh-balance", response_model=list[ups.UpstreamStatus], summary="Refresh balances"
)
async def refresh_balance(
    request: Request,
    name: Annotated[
        str | None, Query(max_length=200, description="One upstream (its account); default all.")
    ] = None,
) -> list[ups.UpstreamStatus]:
    manager = get_runtime(request).upstreams
    if manager is None:
        raise Invalid("this instance has no upstream manager")
    return await ups.refresh_balance(manager, name)


@router.get("", response_model=list[ups.UpstreamInfo], summary="List database upstreams")
async def list_upstreams(engine: Engine) -> list[ups.UpstreamInfo]:
    """Upstreams added through the API, CLI or UI (config-file ones are in /status)."""
    return await ups.list_upstreams(engine)


@router.post("", response_model=ups.UpstreamInfo, status_code=201, summary="Add an upstream")
async def create_upstream(
    request: Request, engine: Engine, spec: Annotated[ups.UpstreamCreate, Body()]
) -> ups.UpstreamInfo:
    info = await ups.create_upstream(engine, spec, _box(request))
    await _changed(request)
    return info


@router.get("/{upstream_id:int}", response_model=ups.UpstreamInfo, summary="Get an upstream")
async def get_upstream(engine: Engine, upstream_id: UpstreamId) -> ups.UpstreamInfo:
    return await ups.get_upstream(engine, upstream_id)


@router.patch("/{upstream_id:int}", response_model=ups.UpstreamInfo, summary="Update an upstream")
async def update_upstream(
    request: Request,
    engine: Engine,
    upstream_id: UpstreamId,
    changes: Annotated[ups.UpstreamUpdate, Body()],
) -> ups.UpstreamInfo:
    """Only the fields sent change; send `api_key` to replace the key."""
    box = _box(request) if "api_key" in changes.model_fields_set else None
    info = await ups.update_upstream(engine, upstream_id, changes, box)
    await _changed(request)
    return info


@router.delete(
    "/{upstream_id:int}", status_code=204, response_class=Response, summary="Delete an upstream"
)
async def delete_upstream(request: Request, engine: Engine, upstream_id: UpstreamId) -> Response:
    await ups.delete_upstream(engine, upstream_id)
    await _changed(request)
    return Response(status_code=204)


@router.post("/{upstream_id:int}/test", response_model=ups.UpstreamTestResult, summary="Test call")
async def test_upstream(
    request: Request,
    engine: Engine,
    upstream_id: UpstreamId,
    model: Annotated[
        str | None, Query(max_length=300, description="Send a one-token chat to this model.")
    ] = None,
) -> ups.UpstreamTestResult:
    """One real call with the stored key: `GET /models`, or a one-token chat with `model`."""
    await ups.get_upstream(engine, upstream_id)  # 404 before needing the secret key
    net = ups.egress_defaults(get_runtime(request).settings)
    result = await ups.test_upstream(engine, upstream_id, _box(request), model, net=net)
    pool = get_runtime(request).pool
    live = next((u for u in pool.upstreams if u.db_id == upstream_id), None)
    if live is not None:  # the pool's health agrees with what the Test saw
        upstream_tests.record(pool, live, model, result)
    return result
