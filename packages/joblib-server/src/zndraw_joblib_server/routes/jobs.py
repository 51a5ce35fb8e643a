"""Job routes: register, list and show jobs; list a room's workers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from zndraw_joblib_core import JobRegisterRequest, JobResponse, JobSummary, Page, WorkerSummary
from zndraw_joblib_server.dependencies import (
    ActorDep,
    DatabaseDep,
    EventSinkDep,
    JobAccessDep,
    ReadableRoom,
    SettingsDep,
    WritableRoom,
)
from zndraw_joblib_server.routes._common import DEFAULT_LIMIT, JobLibRoute, Limit, Offset, problems
from zndraw_joblib_server.services import jobs as job_service
from zndraw_joblib_server.services import workers as worker_service
from zndraw_joblib_server.services.common import written

router = APIRouter(route_class=JobLibRoute, tags=["jobs"], redirect_slashes=False)

LiveFilter = Annotated[
    bool | None,
    Query(
        description="true: only jobs that a live worker serves (a heartbeat or claim within "
        "the worker timeout); false: only jobs that none does."
    ),
]


@router.put(
    "/rooms/{room_id}/jobs",
    status_code=status.HTTP_201_CREATED,
    responses=problems(400, 403, 404, 409, 413, 429)
    | {200: {"model": JobResponse, "description": "Already registered"}},
)
async def register_job(
    room_id: WritableRoom,
    body: JobRegisterRequest,
    response: Response,
    actor: ActorDep,
    db: DatabaseDep,
    settings: SettingsDep,
    sink: EventSinkDep,
    job_access: JobAccessDep,
) -> JobResponse:
    """Register a job (201), or confirm one with the same schema (200), and link a worker.

    Without `worker_id` a worker is created for the caller. `@global` jobs need a superuser.
    `@internal` jobs are the host's: nobody registers or changes one here (403); a
    superuser or internal worker account only links a worker to an existing one (200).
    The first registrant owns the job: by default only the owner's and superusers' workers
    may serve it (403 otherwise).
    """
    # Checked first, so a costly schema never holds the write transaction.
    await job_service.check_registration(actor, room_id, body, settings, db.caches.schemas)
    job, created = await written(
        db, sink, job_service.register_job, actor, room_id, body, settings, job_access
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return job


@router.get("/rooms/{room_id}/jobs", responses=problems(400, 403))
async def list_jobs(
    room_id: ReadableRoom,
    db: DatabaseDep,
    settings: SettingsDep,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
    live: LiveFilter = None,
) -> Page[JobSummary]:
    """The active jobs visible from the room (its own and `@global`), newest first.

    Each counts its live workers (`live_workers`); `?live=true` keeps the jobs with one.
    """
    async with db.read() as session:
        return await job_service.list_jobs(session, room_id, limit, offset, settings, live)


@router.get("/rooms/{room_id}/workers", responses=problems(400, 403))
async def list_room_workers(
    room_id: ReadableRoom,
    db: DatabaseDep,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> Page[WorkerSummary]:
    """Workers serving jobs visible from the room, newest first."""
    async with db.read() as session:
        return await worker_service.list_room_workers(session, room_id, limit, offset)


@router.get("/rooms/{room_id}/jobs/{job_name:path}", responses=problems(400, 403, 404))
async def get_job(
    room_id: ReadableRoom,
    job_name: str,
    db: DatabaseDep,
    settings: SettingsDep,
) -> JobResponse:
    """One job by its full name `{room_id}:{category}:{name}`, as seen from the room."""
    async with db.read() as session:
        return await job_service.get_job(session, room_id, job_name, settings)
