"""Task routes: submit, list, read (long-poll), claim (long-poll), update, cancel."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Response, status
from pydantic import Field

from zndraw_joblib_core import (
    API_PREFIX,
    MAX_UPDATE_BATCH,
    Page,
    TaskBatchSubmitRequest,
    TaskBatchSubmitResponse,
    TaskBatchUpdateItem,
    TaskBatchUpdateRequest,
    TaskBatchUpdateResponse,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
    TaskUpdateClaimRequest,
    TaskUpdateResponse,
)
from zndraw_joblib_server.dependencies import (
    ActorDep,
    DatabaseDep,
    EventSinkDep,
    ReadableRoom,
    RoomAccessDep,
    SettingsDep,
    WritableRoom,
)
from zndraw_joblib_server.routes._common import (
    DEFAULT_LIMIT,
    JobLibRoute,
    Limit,
    Offset,
    PreferHeader,
    prefers_minimal,
    problems,
    wait_seconds,
)
from zndraw_joblib_server.services import tasks as task_service
from zndraw_joblib_server.services import updates as update_service
from zndraw_joblib_server.services import waiting
from zndraw_joblib_server.services.common import written
from zndraw_joblib_server.settings import JobLibSettings

router = APIRouter(route_class=JobLibRoute, tags=["tasks"], redirect_slashes=False)


StatusFilter = Annotated[TaskStatus | None, Query(description="Only tasks in this state.")]

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        description="A repeat by the same user with the same key and body for the same job and "
        "room answers what the first request created (200) and creates nothing; the same key "
        "with another body answers 409 idempotency-key-reused. Keys are scoped per user."
    ),
]


def _announce(response: Response, wait: float | None, *applied: str) -> None:
    """Name the preferences honoured (and the wait applied) in ``Preference-Applied``."""
    if wait is not None:
        applied = (*applied, f"wait={int(wait)}" if wait == int(wait) else f"wait={wait:g}")
    if applied:
        response.headers["Preference-Applied"] = ", ".join(applied)


@router.post(
    "/rooms/{room_id}/tasks/{job_name:path}",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(400, 403, 404, 409, 413, 429, 503)
    | {200: {"model": TaskResponse, "description": "Repeat of an idempotent submit"}},
)
async def submit_task(
    room_id: WritableRoom,
    job_name: str,
    response: Response,
    actor: ActorDep,
    db: DatabaseDep,
    settings: SettingsDep,
    sink: EventSinkDep,
    body: TaskSubmitRequest,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TaskResponse:
    """Submit a task to a job visible from the room; the payload must match the job's schema.

    A room sees its own jobs, `@global` and `@internal` ones. 503
    `internal-job-not-configured`: an `@internal` job no executor serves now.
    """
    key = task_service.idempotency_key_of(idempotency_key)
    task, created = await task_service.submit_one(
        db, sink, actor, room_id, job_name, body, key, settings
    )
    if created:
        response.headers["Location"] = f"{API_PREFIX}/tasks/{task.id}"
        response.headers["Retry-After"] = "1"
    else:
        response.status_code = status.HTTP_200_OK
    return task


@router.post(
    "/rooms/{room_id}/jobs/{job_name:path}/tasks",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(400, 403, 404, 409, 413, 429, 503)
    | {200: {"model": TaskBatchSubmitResponse, "description": "Repeat of an idempotent batch"}},
)
async def submit_tasks(
    room_id: WritableRoom,
    job_name: str,
    response: Response,
    actor: ActorDep,
    db: DatabaseDep,
    settings: SettingsDep,
    sink: EventSinkDep,
    body: TaskBatchSubmitRequest,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TaskBatchSubmitResponse:
    """Submit several tasks of one job in one transaction: all are created, or none.

    Each entry is the body of a single submit. A refused entry (payload against the job's
    schema, sizes) refuses the batch; the problem's `item` member is the entry's index.
    """
    tasks, created = await task_service.submit_batch(
        db, sink, actor, room_id, job_name, body.items, idempotency_key, settings
    )
    if created:
        response.headers["Retry-After"] = "1"
    else:
        response.status_code = status.HTTP_200_OK
    return TaskBatchSubmitResponse(items=tasks)


@router.get("/rooms/{room_id}/tasks", responses=problems(400, 403))
async def list_room_tasks(
    room_id: ReadableRoom,
    db: DatabaseDep,
    status: StatusFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> Page[TaskResponse]:
    """Tasks submitted from the room, newest first."""
    async with db.read() as session:
        return await task_service.list_room_tasks(session, room_id, status, limit, offset)


@router.get("/rooms/{room_id}/jobs/{job_name:path}/tasks", responses=problems(400, 403, 404))
async def list_job_tasks(
    room_id: ReadableRoom,
    job_name: str,
    db: DatabaseDep,
    status: StatusFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> Page[TaskResponse]:
    """Tasks of one job submitted from the room, newest first."""
    async with db.read() as session:
        return await task_service.list_job_tasks(session, room_id, job_name, status, limit, offset)


@router.post("/tasks/claim", responses=problems(403, 404))
async def claim_tasks(
    body: TaskClaimRequest,
    response: Response,
    actor: ActorDep,
    db: DatabaseDep,
    settings: SettingsDep,
    sink: EventSinkDep,
    prefer: PreferHeader = None,
) -> TaskClaimResponse:
    """Claim up to `max_tasks` tasks of the jobs the worker serves.

    With `Prefer: wait=N` the request waits until a task is available or N seconds pass,
    without holding a database connection, and answers `Preference-Applied`. With
    `start: true` the tasks come back `running`; with `providers: true` the answer also lists
    the reads waiting for the worker's providers (a new read ends the wait).
    """
    wait = _claim_wait(prefer, settings)
    _announce(response, wait)
    return await waiting.claim_request(db, sink, actor, body, wait, settings)


def _claim_wait(prefer: str | None, settings: JobLibSettings) -> float | None:
    """A claim's ``Prefer: wait=N``, capped to the longest a claim may wait."""
    # A waiting claim counts as a heartbeat only when it starts: keep it well inside the
    # worker timeout so an idle worker is never swept while it waits.
    cap = min(settings.long_poll_max_wait_seconds, settings.worker_timeout_seconds / 2)
    return wait_seconds(prefer, cap)


@router.get("/tasks/{task_id}", responses=problems(404))
async def get_task(
    task_id: uuid.UUID,
    response: Response,
    actor: ActorDep,
    db: DatabaseDep,
    access: RoomAccessDep,
    settings: SettingsDep,
    prefer: PreferHeader = None,
    wait_for: Annotated[
        Literal["terminal", "change"],
        Query(
            description="With `Prefer: wait=N`: wake when the task is terminal (default) "
            "or on any change (status, progress, message)."
        ),
    ] = "terminal",
    if_none_match: Annotated[
        str | None,
        Header(
            description='With `wait_for=change`: the `version` (or ETag, `"N"`) the caller '
            "already has; a task at another version is answered at once."
        ),
    ] = None,
) -> TaskResponse:
    """A task; with `Prefer: wait=N` it waits until the task finishes (or changes).

    The answer carries the task's version as `ETag`.
    """
    wait = wait_seconds(prefer, settings.long_poll_max_wait_seconds)
    known = _version_of(if_none_match)
    task, waited = await waiting.read_task(db, actor, access, task_id, wait, wait_for, known)
    if waited:
        _announce(response, wait)
    response.headers["ETag"] = f'"{task.version}"'
    return task


def _version_of(if_none_match: str | None) -> int | None:
    value = (if_none_match or "").strip().removeprefix("W/").strip('"')
    return int(value) if value.isdigit() and len(value) < 12 else None


@router.patch(
    "/tasks/{task_id}",
    response_model=TaskUpdateResponse,
    responses=problems(403, 404, 409, 413),
)
async def update_task(
    task_id: uuid.UUID,
    body: TaskUpdateClaimRequest,
    response: Response,
    actor: ActorDep,
    db: DatabaseDep,
    access: RoomAccessDep,
    settings: SettingsDep,
    sink: EventSinkDep,
    prefer: PreferHeader = None,
) -> TaskResponse:
    """Move a task forward, report progress, a result or a failure.

    With `worker_id`, a worker that no longer holds the task's lease gets 409 `lease-lost`.
    With `claim_next`, the worker's next claim is made once the update is applied (with
    `Prefer: wait=N` it waits for work as a claim does) and answered in `claimed`.
    """
    request = body.claim_next
    wait = None if request is None else _claim_wait(prefer, settings)
    _announce(response, wait)
    task, claimed = await update_service.update_one(
        db, sink, actor, access, task_id, body, settings, request, wait
    )
    if request is None:
        return task
    return TaskUpdateResponse.model_construct(**dict(task), claimed=claimed)


@router.patch("/tasks", responses=problems(413))
async def update_tasks(
    body: Annotated[
        Annotated[list[TaskBatchUpdateItem], Field(max_length=MAX_UPDATE_BATCH)]
        | TaskBatchUpdateRequest,
        Body(),
    ],
    response: Response,
    actor: ActorDep,
    db: DatabaseDep,
    access: RoomAccessDep,
    settings: SettingsDep,
    sink: EventSinkDep,
    prefer: Annotated[
        str | None,
        Header(
            description="`return=minimal` (RFC 7240): applied entries answer without the "
            "task (`task: null`); cheaper when the caller only needs to know what applied. "
            "`wait=N`: with `claim_next`, wait for work as a claim does."
        ),
    ] = None,
) -> TaskBatchUpdateResponse:
    """Apply several task updates in one request; each entry succeeds or fails on its own.

    The body is the list of entries, or an object with the entries in `items` and the
    worker's next claim in `claim_next`: made once the updates are applied, answered in
    `claimed`.
    """
    items, claim = (body, None) if isinstance(body, list) else (body.items, body.claim_next)
    minimal = prefers_minimal(prefer)
    wait = None if claim is None else _claim_wait(prefer, settings)
    outcomes, claimed = await update_service.update_batch(
        db, sink, actor, access, items, claim, settings, wait=wait, minimal=minimal
    )
    _announce(response, wait, *(["return=minimal"] if minimal else []))
    return TaskBatchUpdateResponse(items=outcomes, claimed=claimed)


@router.post("/tasks/{task_id}/cancel", responses=problems(403, 404, 409))
async def cancel_task(
    task_id: uuid.UUID,
    actor: ActorDep,
    db: DatabaseDep,
    access: RoomAccessDep,
    sink: EventSinkDep,
) -> TaskResponse:
    """Cancel a pending task now; ask the worker to stop a claimed or running one."""
    return await written(db, sink, task_service.cancel_task, actor, access, task_id)
