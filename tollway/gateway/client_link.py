"""How the server protocol tells a request that its client has gone, without a watcher task.

The endpoint puts its own task in the ASGI scope (`TASK`) once it starts waiting on an
upstream; when the connection is lost before the response is complete, the protocol
(`http_server.TollwayHttpProtocol.connection_lost`) marks the scope (`GONE`) and cancels that
task. The cancellation closes the upstream connection wherever the request is waiting (for the
answer's head, its body, or the next stream chunk), and the endpoint records the request as
`client_disconnected`. Per request this costs a dict store and a lookup; a watcher task per
request (create, then cancel) cost several microseconds more.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

TASK = "tollway.task"  # the request's task, cancelled when its client leaves
GONE = "tollway.client_gone"  # set once the connection was lost before the response ended
CANCEL_MESSAGE = "client disconnected"


def client_lost(scope: MutableMapping[str, Any]) -> None:
    """Called by the protocol when the connection is lost mid-request."""
    scope[GONE] = True
    task: asyncio.Task[Any] | None = scope.get(TASK)
    if task is not None and not task.done():
        task.cancel(CANCEL_MESSAGE)


def uncancel() -> None:
    """The request handles its cancellation itself and goes on to record it: undo the
    pending-cancel count so later awaits (settle, final writes) behave normally."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()
