"""/sessions: end every web UI session ("log out everywhere")."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from tollway.admin.deps import Engine
from tollway.services import sessions

router = APIRouter(prefix="/sessions", tags=["sessions"])


class Revoked(BaseModel):
    generation: int  # the new session generation: cookies signed with an older one are refused


@router.post("/revoke", response_model=Revoked, summary="Log out everywhere")
async def revoke(engine: Engine) -> Revoked:
    """Every UI session of every browser and instance ends at once (copied cookies too)."""
    return Revoked(generation=await sessions.revoke_all(engine))
