"""Submitting, reading, listing and cancelling tasks."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from functools import lru_cache
from typing import Any

from jsonschema.validators import validator_for
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    Forbidden,
    InvalidPayload,
    InvalidTaskTransition,
    Page,
    TaskAvailable,
    TaskNotFound,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
)
from zndraw_joblib_server.models import Job, Task, utcnow
from zndraw_joblib_server.services.access import Actor, RoomAccess
from zndraw_joblib_server.services.common import (
    announce,
    check_size,
    job_names,
    queue_positions,
    to_response,
    validate_room,
)
from zndraw_joblib_server.services.jobs import resolve_job
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork

__all__ = [
    "cancel_task",
    "get_task",
    "list_job_tasks",
    "list_room_tasks",
    "load_task",
    "respond",
    "submit_task",
]

MAX_IDEMPOTENCY_KEY = 255


@lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    return validator_for(schema)(schema)


def validate_payload(schema: dict[str, Any], payload: dict[str, Any]) -> None:
    """Raise :class:`InvalidPayload` listing every place ``payload`` breaks ``schema``."""
    if not schema:
        return
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
    if errors:
        listed = [
            {"path": "/" + "/".join(str(p) for p in e.absolute_path), "message": e.message}
            for e in errors[:50]
        ]
        raise InvalidPayload(
            f"The payload does not match the job's schema ({len(errors)} error(s)).",
            errors=listed,
        )


async def respond(session: AsyncSession, task: Task) -> TaskResponse:
    """Serialise one task with its job name and queue position."""
    names = await job_names(session, [task.job_id])
    positions = await queue_positions(session, [task])
    return to_response(task, names[task.job_id], positions.get(task.id))


async def submit_task(
    uow: UnitOfWork,
    actor: Actor,
    room_id: str,
    job_name: str,
    body: TaskSubmitRequest,
    idempotency_key: str | None,
    settings: JobLibSettings,
) -> tuple[TaskResponse, bool]:
    """Create a pending task for a job visible from ``room_id`` (access already checked).

    Returns:
        The task, and False when an earlier submit with the same idempotency key was found.
    """
    session = uow.session
    job = await resolve_job(session, room_id, job_name)
    check_size("payload", body.payload, settings.max_payload_bytes)
    validate_payload(job.schema_, body.payload)
    if idempotency_key is not None:
        found = await _by_key(session, job.id, room_id, idempotency_key)
        if found is not None:
            return await respond(session, found), False
    now = utcnow()
    task = Task(
        id=uuid.uuid4(),
        job_id=job.id,
        room_id=room_id,
        created_by_id=actor.id,
        status=TaskStatus.PENDING,
        payload=body.payload,
        priority=body.priority,
        run_after=max(body.run_after, now) if body.run_after else now,
        created_at=now,
        attempt=0,
        max_attempts=body.max_attempts or settings.default_max_attempts,
        timeout_seconds=body.timeout_seconds,
        lease_seconds=body.lease_seconds,
        idempotency_key=idempotency_key,
        cancel_requested=False,
        version=0,
    )
    if idempotency_key is None:
        session.add(task)
        await session.flush()
    else:
        try:
            async with session.begin_nested():
                session.add(task)
                await session.flush()
        except IntegrityError:  # the same key submitted concurrently by another process
            found = await _by_key(session, job.id, room_id, idempotency_key)
            if found is None:
                raise
            return await respond(session, found), False
    await announce(uow, [task], now, claimable=[task])
    uow.events.append(TaskAvailable(task_id=task.id, job_name=job.full_name, room_id=room_id))
    return await respond(session, task), True


async def _by_key(
    session: AsyncSession, job_id: uuid.UUID, room_id: str, key: str | None
) -> Task | None:
    if key is None:
        return None
    return (
        await session.execute(
            select(Task).where(
                Task.job_id == job_id, Task.room_id == room_id, Task.idempotency_key == key
            )
        )
    ).scalar_one_or_none()


def idempotency_key_of(raw: str | None) -> str | None:
    """Normalise an ``Idempotency-Key`` header (long keys are hashed to fit the column)."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_IDEMPOTENCY_KEY:
        return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    return raw


async def load_task(
    session: AsyncSession, task_id: uuid.UUID, *, for_update: bool = False
) -> Task:
    """Load a task or raise :class:`TaskNotFound`."""
    stmt = select(Task).where(Task.id == task_id)
    if for_update:
        stmt = stmt.with_for_update()
    task = (await session.execute(stmt)).scalar_one_or_none()
    if task is None:
        raise TaskNotFound(f"Task {task_id} not found.")
    return task


async def get_task(
    session: AsyncSession, actor: Actor, access: RoomAccess, task_id: uuid.UUID
) -> tuple[TaskResponse, int]:
    """A task the caller may read, and its version (for change long-polls)."""
    task = await load_task(session, task_id)
    if not await access.can_read(actor, task.room_id):
        raise TaskNotFound(f"Task {task_id} not found.")
    return await respond(session, task), task.version


async def cancel_task(
    uow: UnitOfWork, actor: Actor, access: RoomAccess, task_id: uuid.UUID
) -> TaskResponse:
    """Cancel a pending task now, or ask the worker holding it to stop."""
    session = uow.session
    task = await load_task(session, task_id, for_update=True)
    if not await access.can_read(actor, task.room_id):
        raise TaskNotFound(f"Task {task_id} not found.")
    if task.created_by_id != actor.id and not actor.is_superuser:
        raise Forbidden("Only the submitter or a superuser may cancel this task.")
    now = utcnow()
    if task.status.is_terminal:
        raise InvalidTaskTransition(f"Cannot cancel a task that is already '{task.status.value}'.")
    if task.status == TaskStatus.PENDING:
        task.status = TaskStatus.CANCELLED
        task.completed_at = now
        task.error = task.error or "Cancelled before it was claimed."
    elif not task.cancel_requested:
        task.cancel_requested = True
        task.cancel_requested_at = now
    else:
        return await respond(session, task)
    task.version += 1
    await session.flush()
    await announce(uow, [task], now)
    return await respond(session, task)


async def _list(
    session: AsyncSession,
    where: list[Any],
    status: TaskStatus | None,
    limit: int,
    offset: int,
) -> Page[TaskResponse]:
    if status is not None:
        where = [*where, Task.status == status]
    total = (await session.execute(select(func.count()).select_from(Task).where(*where))).scalar()
    tasks: list[Task] = []
    if limit:
        tasks = list(
            (
                await session.execute(
                    select(Task)
                    .where(*where)
                    .order_by(Task.created_at.desc(), Task.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).scalars()
        )
    names = await job_names(session, {t.job_id for t in tasks})
    positions = await queue_positions(session, tasks)
    items = [to_response(t, names[t.job_id], positions.get(t.id)) for t in tasks]
    return Page[TaskResponse](items=items, total=total or 0, limit=limit, offset=offset)


async def list_room_tasks(
    session: AsyncSession,
    room_id: str,
    status: TaskStatus | None,
    limit: int,
    offset: int,
) -> Page[TaskResponse]:
    """Tasks submitted from ``room_id``, newest first."""
    validate_room(room_id)
    return await _list(session, [Task.room_id == room_id], status, limit, offset)


async def list_job_tasks(
    session: AsyncSession,
    room_id: str,
    job_name: str,
    status: TaskStatus | None,
    limit: int,
    offset: int,
) -> Page[TaskResponse]:
    """Tasks of one job submitted from ``room_id``, newest first."""
    job: Job = await resolve_job(session, room_id, job_name)
    return await _list(
        session, [Task.job_id == job.id, Task.room_id == room_id], status, limit, offset
    )


def lease_for(task: Task, settings: JobLibSettings) -> timedelta:
    """The lease length of a task (its own override, else the setting)."""
    return timedelta(seconds=task.lease_seconds or settings.lease_seconds)
