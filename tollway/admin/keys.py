"""/keys: client key administration, a thin face over tollway.services.keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response

from tollway.admin.deps import Engine, keys_changed
from tollway.admin.params import ID_MAX, IsoDateTime
from tollway.services import keys, usage

router = APIRouter(prefix="/keys", tags=["keys"])

KeyId = Annotated[int, Path(ge=1, le=ID_MAX, description="The key's numeric id.")]


@router.get("", response_model=keys.KeyPage, summary="List keys")
async def list_keys(
    engine: Engine,
    offset: Annotated[int, Query(ge=0, le=ID_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=keys.MAX_PAGE)] = 50,
    search: Annotated[
        str | None, Query(max_length=300, description="Part of the name, email or prefix.")
    ] = None,
    status: Annotated[keys.KeyStatus | None, Query()] = None,
) -> keys.KeyPage:
    """Newest first, with the total count of matching keys."""
    return await keys.list_keys(engine, offset=offset, limit=limit, search=search, status=status)


@router.post("", response_model=keys.CreatedKey, status_code=201, summary="Create a key")
async def create_key(
    request: Request, engine: Engine, spec: Annotated[keys.KeyCreate, Body()]
) -> keys.CreatedKey:
    """The response is the only place the raw key ever appears: store it now."""
    created = await keys.create_key(engine, spec)
    await keys_changed(request)
    return created


@router.get("/{key_id}", response_model=keys.KeyInfo, summary="Get a key")
async def get_key(engine: Engine, key_id: KeyId) -> keys.KeyInfo:
    return await keys.get_key(engine, key_id)


@router.patch("/{key_id}", response_model=keys.KeyInfo, summary="Update a key")
async def update_key(
    request: Request, engine: Engine, key_id: KeyId, changes: Annotated[keys.KeyUpdate, Body()]
) -> keys.KeyInfo:
    """Only the fields sent change; `null` clears a limit, the email, the expiry or the model
    allow-list."""
    info = await keys.update_key(engine, key_id, changes)
    await keys_changed(request)
    return info


@router.post("/{key_id}/enable", response_model=keys.KeyInfo, summary="Enable a key")
async def enable_key(request: Request, engine: Engine, key_id: KeyId) -> keys.KeyInfo:
    info = await keys.enable_key(engine, key_id)
    await keys_changed(request)
    return info


@router.post("/{key_id}/disable", response_model=keys.KeyInfo, summary="Disable a key")
async def disable_key(request: Request, engine: Engine, key_id: KeyId) -> keys.KeyInfo:
    """Requests with the key are refused at once on this instance, within a second on others."""
    info = await keys.disable_key(engine, key_id)
    await keys_changed(request)
    return info


@router.post("/{key_id}/rotate", response_model=keys.CreatedKey, summary="Rotate a key")
async def rotate_key(request: Request, engine: Engine, key_id: KeyId) -> keys.CreatedKey:
    """A new secret for the same record: limits and usage history stay, the old secret dies."""
    created = await keys.rotate_key(engine, key_id)
    await keys_changed(request)
    return created


@router.delete("/{key_id}", status_code=204, response_class=Response, summary="Delete a key")
async def delete_key(request: Request, engine: Engine, key_id: KeyId) -> Response:
    """Its usage history is kept, unlinked from the key."""
    await keys.delete_key(engine, key_id)
    await keys_changed(request)
    return Response(status_code=204)


@router.get("/{key_id}/stats", response_model=usage.KeyStats, summary="Usage of one key")
async def key_stats(
    engine: Engine,
    key_id: KeyId,
    recent: Annotated[int, Query(ge=0, le=1000, description="How many recent requests.")] = 10,
    start: Annotated[IsoDateTime | None, Query()] = None,
    end: Annotated[IsoDateTime | None, Query()] = None,
) -> usage.KeyStats:
    """Totals, by endpoint, by model and the most recent requests (the CLI's `key-stats`)."""
    return await usage.key_stats(engine, key_id, recent, start=start, end=end)
