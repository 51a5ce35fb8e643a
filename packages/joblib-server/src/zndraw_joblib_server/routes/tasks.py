"""Task routes: submit, list, read (long-poll), claim (long-poll), update, cancel."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Response, status

from zndraw_joblib_core import (
    API_PREFIX,
    Page,
    TaskBatchSubmitRequest,
    TaskBatchSubmitResponse,
    TaskBatchUpdateItem,
    TaskBatchUpdateResponse,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
    TaskUpdateRequest,
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
from zndraw_joblib_server.models import utcnow
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
from zndraw_joblib_server.services import claim as claim_service
from zndraw_joblib_server.services import tasks as task_service
from zndraw_joblib_server.services import updates as update_service
from zndraw_joblib_server.services.access import Actor, RoomAccess
from zndraw_joblib_server.services.records import StaleRecord
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import ClaimOffer, Database, EventSink, Subscription

router = APIRouter(route_class=JobLibRoute, tags=["tasks"], redirect_slashes=False)

MAX_BATCH_UPDATE = 500

StatusFilter = Annotated[TaskStatus | None, Query(description="Only tasks in this state.")]

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        description="A repeat by the same user with the same key and body for the same job and "
        "room answers what the first request created (200) and creates nothing; the same key "
        "with another body answers 409 idempotency-key-reused. Keys are scoped per user."
    ),
]


def _applied(wait: float) -> str:
    return f"wait={int(wait)}" if wait == int(wait) else f"wait={wait:g}"


@router.post(
    "/rooms/{room_id}/tasks/{job_name:path}",
    response_model=TaskResponse,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(400, 403, 404, 409, 413, 429)
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
    """Submit a task to a job visible from the room; the payload must match the job's schema."""
    key = task_service.idempotency_key_of(idempotency_key)
    # PostgreSQL: its one insert needs no transaction. A claim waiting in this process is
    # woken after the insert and claims for itself: fewer round trips before its answer
    # than handing it the task inside a submit transaction (SQLite still hands it over).

    async def attempt(checked: str | None) -> tuple[TaskResponse, bool]:
        async with db.write(sink, autocommit=True) as uow:
            return await task_service.submit_task(
                uow, actor, room_id, job_name, body, key, settings, checked
            )

    task, created = await task_service.with_checks(attempt, settings)
    if created:
        response.headers["Location"] = f"{API_PREFIX}/tasks/{task.id}"
        response.headers["Retry-After"] = "1"
    else:
        response.status_code = status.HTTP_200_OK
    return task


@router.post(
    "/rooms/{room_id}/jobs/{job_name:path}/tasks",
    response_model=TaskBatchSubmitResponse,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(400, 403, 404, 409, 413, 429)
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
    keys = task_service.batch_keys(idempotency_key, len(body.items))

    async def attempt(checked: str | None) -> tuple[list[TaskResponse], bool]:
        async with db.write(sink) as uow:
            return await task_service.submit_tasks(
                uow,
                actor,
                room_id,
                job_name,
                body.items,
                None if keys is None else keys[:-1],
                settings,
                checked,
                probe=None if keys is None else keys[-1],
            )

    tasks, created = await task_service.with_checks(attempt, settings)
    if created:
        response.headers["Retry-After"] = "1"
    else:
        response.status_code = status.HTTP_200_OK
    return TaskBatchSubmitResponse(items=tasks)


@router.get(
    "/rooms/{room_id}/tasks", response_model=Page[TaskResponse], responses=problems(400, 403)
)
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


@router.get(
    "/rooms/{room_id}/jobs/{job_name:path}/tasks",
    response_model=Page[TaskResponse],
    responses=problems(400, 403, 404),
)
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


@router.post("/tasks/claim", response_model=TaskClaimResponse, responses=problems(403, 404))
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
    without holding a database connection, and answers `Preference-Applied`.
    """
    # A waiting claim counts as a heartbeat only when it starts: keep it well inside the
    # worker timeout so an idle worker is never swept while it waits.
    cap = min(settings.long_poll_max_wait_seconds, settings.worker_timeout_seconds / 2)
    wait = wait_seconds(prefer, cap)
    due = None
    seq = db.notifier.seq
    async with db.write(sink, autocommit=True) as uow:
        tasks, job_ids = await claim_service.claim_tasks(
            uow, actor, body.worker_id, body.max_tasks, settings
        )
        if not tasks and wait is not None:
            due = await claim_service.next_due(uow.session, job_ids)
    if not tasks and wait is not None:
        tasks = await _wait_and_claim(db, actor, body, job_ids, due, seq, wait, settings, sink)
    if wait is not None:
        response.headers["Preference-Applied"] = _applied(wait)
    return TaskClaimResponse(task=tasks[0] if tasks else None, tasks=tasks)


async def _wait_and_claim(
    db: Database,
    actor: Actor,
    body: TaskClaimRequest,
    job_ids: list[uuid.UUID],
    due: datetime | None,
    seq: int,
    wait: float,
    settings: JobLibSettings,
    sink: EventSink | None,
) -> list[TaskResponse]:
    """Hold a claim until a task of ``job_ids`` arrives or ``wait`` seconds pass.

    No connection is held while waiting: the request sleeps on the in-process notifier (fed
    by PostgreSQL NOTIFY across processes). It claims again only when woken, when the
    earliest delayed task (``due``) falls due, or every ``claim_poll_interval_seconds`` (so
    a lost notification only delays work); an idle wait costs the database nothing.

    While a woken claim is running, the subscription stays fired, so the next submit wakes
    another waiter rather than this busy one; a submit this claim may have missed makes it
    look again at once. With ``claim_handoff`` a submit in this process claims for the
    waiting request inside its own transaction (``services.claim.hand_off``), and the request
    answers with what it was handed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    tasks: list[TaskResponse] = []
    worker_key = f"worker:{body.worker_id}"
    job_keys = [f"job:{j}" for j in job_ids]
    offer = ClaimOffer(actor, body.worker_id, body.max_tasks) if settings.claim_handoff else None
    async with db.notifier.subscribe([worker_key, *job_keys], offer) as sub:
        # A submit may have committed between the empty claim and the subscription.
        woken = db.notifier.notified_since([worker_key, *job_keys], seq)
        while not tasks:
            remaining = deadline - loop.time()
            if not woken:
                if remaining <= 0:
                    break
                pause = min(remaining, settings.claim_poll_interval_seconds)
                if due is not None:
                    pause = min(pause, max((due - utcnow()).total_seconds(), 0) + 0.001)
                woken = await sub.wait(pause, consume=False)
                tasks = await sub.take_handed()  # a submit in this process claimed for us
                if tasks:
                    break
                if not woken and due is None and pause >= remaining:
                    break  # nothing arrived and nothing fell due: no need to look
            mark = db.notifier.seq
            async with db.write(sink, autocommit=True) as uow:
                tasks, served = await claim_service.claim_tasks(
                    uow, actor, body.worker_id, body.max_tasks, settings, likely=woken
                )
                if not tasks:
                    due = await claim_service.next_due(uow.session, job_ids)
            sub.clear()
            # Not merely "the worker's key was notified": on PostgreSQL this process also
            # hears its own notifications again (LISTEN echoes them), possibly late.
            if not tasks and set(served) != set(job_ids):
                break  # the worker now serves other jobs: let the client ask again
            woken = not tasks and db.notifier.notified_since(job_keys, mark)
    return tasks


@router.get("/tasks/{task_id}", response_model=TaskResponse, responses=problems(404))
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
    async with db.notifier.subscribe([f"task:{task_id}"]) as sub:
        async with db.read() as session:
            task, version = await task_service.get_task(session, actor, access, task_id)
        changed = wait_for == "change" and known is not None and known != version
        if wait is not None and not task.status.is_terminal and not changed:
            task = await _wait_for_task(db, sub, actor, access, task, version, wait, wait_for)
            response.headers["Preference-Applied"] = _applied(wait)
    response.headers["ETag"] = f'"{task.version}"'
    return task


def _version_of(if_none_match: str | None) -> int | None:
    value = (if_none_match or "").strip().removeprefix("W/").strip('"')
    return int(value) if value.isdigit() and len(value) < 12 else None


async def _wait_for_task(
    db: Database,
    sub: Subscription,
    actor: Actor,
    access: RoomAccess,
    task: TaskResponse,
    version: int,
    wait: float,
    wait_for: str,
) -> TaskResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (remaining := deadline - loop.time()) > 0:
        if not await sub.wait(remaining):
            break
        async with db.read() as session:
            task, now_version = await task_service.get_task(session, actor, access, task.id)
        if task.status.is_terminal or (wait_for == "change" and now_version != version):
            break
    return task


@router.patch(
    "/tasks/{task_id}", response_model=TaskResponse, responses=problems(403, 404, 409, 413)
)
async def update_task(
    task_id: uuid.UUID,
    body: TaskUpdateRequest,
    actor: ActorDep,
    db: DatabaseDep,
    access: RoomAccessDep,
    settings: SettingsDep,
    sink: EventSinkDep,
) -> TaskResponse:
    """Move a task forward, report progress, a result or a failure.

    With `worker_id`, a worker that no longer holds the task's lease gets 409 `lease-lost`.
    """
    try:  # PostgreSQL: outside a transaction, applied only to the version it read
        async with db.write(sink, autocommit=True) as uow:
            return await update_service.update_task(uow, actor, access, task_id, body, settings)
    except StaleRecord:
        pass  # changed meanwhile: nothing was written; again, in a transaction
    async with db.write(sink) as uow:
        return await update_service.update_task(uow, actor, access, task_id, body, settings)


@router.patch("/tasks", response_model=TaskBatchUpdateResponse, responses=problems(413))
async def update_tasks(
    items: Annotated[list[TaskBatchUpdateItem], Body(max_length=MAX_BATCH_UPDATE)],
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
            "task (`task: null`); cheaper when the caller only needs to know what applied."
        ),
    ] = None,
) -> TaskBatchUpdateResponse:
    """Apply several task updates in one request; each entry succeeds or fails on its own."""
    minimal = prefers_minimal(prefer)
    async with db.write(sink) as uow:
        outcomes = await update_service.update_tasks(
            uow, actor, access, items, settings, minimal=minimal
        )
    if minimal:
        response.headers["Preference-Applied"] = "return=minimal"
    return TaskBatchUpdateResponse(items=outcomes)


@router.post(
    "/tasks/{task_id}/cancel", response_model=TaskResponse, responses=problems(403, 404, 409)
)
async def cancel_task(
    task_id: uuid.UUID,
    actor: ActorDep,
    db: DatabaseDep,
    access: RoomAccessDep,
    sink: EventSinkDep,
) -> TaskResponse:
    """Cancel a pending task now; ask the worker to stop a claimed or running one."""
    async with db.write(sink) as uow:
        return await task_service.cancel_task(uow, actor, access, task_id)
