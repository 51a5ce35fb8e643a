"""Worker routes: create, list, heartbeat, delete."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from zndraw_joblib_core import Page, WorkerResponse, WorkerSummary
from zndraw_joblib_server.dependencies import ActorDep, DatabaseDep, EventSinkDep, SettingsDep
from zndraw_joblib_server.routes._common import DEFAULT_LIMIT, JobLibRoute, Limit, Offset, problems
from zndraw_joblib_server.services import workers as worker_service
from zndraw_joblib_server.services.common import written

router = APIRouter(route_class=JobLibRoute, tags=["workers"], redirect_slashes=False)


@router.post("/workers", status_code=status.HTTP_201_CREATED, responses=problems(429))
async def create_worker(
    actor: ActorDep, db: DatabaseDep, settings: SettingsDep, sink: EventSinkDep
) -> WorkerResponse:
    """Create a worker owned by the caller (429 `quota-exceeded` past the per-user cap)."""
    return await written(db, sink, worker_service.create_worker, actor, settings)


@router.get("/workers", responses=problems())
async def list_workers(
    actor: ActorDep, db: DatabaseDep, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> Page[WorkerSummary]:
    """Every worker, newest first."""
    async with db.read() as session:
        return await worker_service.list_workers(session, limit, offset)


@router.patch("/workers/{worker_id}", responses=problems(403, 404))
async def heartbeat(
    worker_id: uuid.UUID,
    actor: ActorDep,
    db: DatabaseDep,
    settings: SettingsDep,
    sink: EventSinkDep,
) -> WorkerResponse:
    """Heartbeat: keep the worker alive and extend the leases of its in-flight tasks.

    The answer lists in `cancel_requested` the worker's tasks that should stop.
    """
    return await written(db, sink, worker_service.heartbeat, actor, worker_id, settings)


@router.delete(
    "/workers/{worker_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(403, 404),
)
async def delete_worker(
    worker_id: uuid.UUID,
    actor: ActorDep,
    db: DatabaseDep,
    settings: SettingsDep,
    sink: EventSinkDep,
) -> Response:
    """Remove a worker (owner or superuser); its in-flight tasks are released."""
    await written(db, sink, worker_service.remove_worker, actor, worker_id, settings)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
