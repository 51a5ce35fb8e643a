"""Task updates from workers: status transitions, progress, results, retries, fencing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    ACTIVE_STATUSES,
    Forbidden,
    InvalidTaskTransition,
    LeaseLost,
    ProblemError,
    RequestValidationFailed,
    TaskBatchUpdateItem,
    TaskBatchUpdateOutcome,
    TaskResponse,
    TaskStatus,
    TaskUpdateRequest,
    can_transition,
)
from zndraw_joblib_server.models import Task, Worker, utcnow
from zndraw_joblib_server.services.access import Actor, RoomAccess
from zndraw_joblib_server.services.common import (
    announce,
    check_size,
    requeue,
)
from zndraw_joblib_server.services.tasks import cancel_task, lease_for, load_task, respond
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork

__all__ = ["update_task", "update_tasks"]


async def _may_act(session: AsyncSession, actor: Actor, task: Task) -> bool:
    if actor.is_superuser:
        return True
    if task.worker_id is None:
        return False
    worker = await session.get(Worker, task.worker_id)
    return worker is not None and worker.user_id == actor.id


def _fence(task: Task, body: TaskUpdateRequest, now: datetime) -> bool:
    """Check the caller's worker still holds the lease; True for a harmless repeat."""
    if body.worker_id is None:
        return False
    if (
        task.worker_id == body.worker_id
        and body.status is not None
        and task.status == body.status
        and task.status.is_terminal
    ):
        return True  # the same final report again (a retried request): answer, change nothing
    if task.worker_id != body.worker_id or task.status not in ACTIVE_STATUSES:
        raise LeaseLost(f"Worker {body.worker_id} no longer holds task {task.id}.")
    if task.lease_expires_at is not None and task.lease_expires_at < now:
        raise LeaseLost(f"The lease of worker {body.worker_id} on task {task.id} expired.")
    return False


def _check_limits(body: TaskUpdateRequest, settings: JobLibSettings) -> None:
    if body.result is not None and body.status != TaskStatus.COMPLETED:
        raise RequestValidationFailed("A result is only accepted with status 'completed'.")
    if body.error is not None:
        check_size("error text", body.error, settings.max_error_chars)
    if body.message is not None:
        check_size("message", body.message, settings.max_message_chars)
    if body.result is not None:
        check_size("result", body.result, settings.max_result_bytes)


def _apply(
    task: Task, body: TaskUpdateRequest, actor: Actor, now: datetime, settings: JobLibSettings
) -> bool:
    """Change the task as the update asks; True when it went back to pending."""
    target = body.status
    if target is None:
        if task.status != TaskStatus.RUNNING:
            raise InvalidTaskTransition(
                f"Progress can only be reported while running (task is '{task.status.value}')."
            )
    elif not can_transition(task.status, target):
        raise InvalidTaskTransition(
            f"Cannot transition from '{task.status.value}' to '{target.value}'."
        )
    elif target == TaskStatus.CLAIMED and not actor.is_superuser:
        raise Forbidden("Only a superuser may claim a task through PATCH; use /tasks/claim.")
    if body.progress is not None:
        task.progress = body.progress
    if body.message is not None:
        task.message = body.message
    task.version += 1
    if target is None:
        return False
    requeued = False
    if target == TaskStatus.CLAIMED:
        task.attempt += 1
        task.claimed_at = now
        task.lease_expires_at = now + lease_for(task, settings)
    elif target == TaskStatus.RUNNING:
        task.started_at = now
        task.lease_expires_at = now + lease_for(task, settings)
        if task.timeout_seconds is not None:
            task.deadline_at = now + timedelta(seconds=task.timeout_seconds)
    elif target == TaskStatus.FAILED and body.retry and task.cancel_requested:
        target = TaskStatus.CANCELLED  # the submitter asked to stop: no new attempt
        task.completed_at = now
        task.lease_expires_at = None
        task.deadline_at = None
        task.error = body.error or "Cancelled on request."
    elif target == TaskStatus.FAILED and body.retry and task.attempt < task.max_attempts:
        requeued = True
        task.error = body.error or "Failed; retry requested."
        requeue(task, now, settings)
        return requeued
    else:  # a terminal state
        task.completed_at = now
        task.lease_expires_at = None
        task.deadline_at = None
        if target == TaskStatus.COMPLETED:
            task.result = body.result
        if body.error is not None:
            task.error = body.error
        elif target == TaskStatus.CANCELLED and task.cancel_requested:
            task.error = task.error or "Cancelled on request."
    task.status = target
    return requeued


async def _update_one(
    uow: UnitOfWork,
    actor: Actor,
    access: RoomAccess,
    task_id: uuid.UUID,
    body: TaskUpdateRequest,
    settings: JobLibSettings,
) -> TaskResponse:
    session = uow.session
    task = await load_task(session, task_id, for_update=True)
    now = utcnow()
    if body.worker_id is not None:
        # Fencing first: a worker that lost the task learns so (409), whoever it belongs to.
        worker = await session.get(Worker, body.worker_id)
        if worker is not None and worker.user_id != actor.id and not actor.is_superuser:
            raise Forbidden("This worker belongs to a different user.")
        if _fence(task, body, now):
            return await respond(session, task)
        if worker is None:
            raise LeaseLost(f"Worker {body.worker_id} no longer exists.")
    elif not await _may_act(session, actor, task):
        if body.status == TaskStatus.CANCELLED and task.created_by_id == actor.id:
            return await cancel_task(uow, actor, access, task_id)
        raise Forbidden("Only the owner of the task's worker (or a superuser) may update it.")
    _check_limits(body, settings)
    requeued = _apply(task, body, actor, now, settings)
    await session.flush()
    await announce(uow, [task], now, [task] if requeued else [])
    return await respond(session, task)


async def update_task(
    uow: UnitOfWork,
    actor: Actor,
    access: RoomAccess,
    task_id: uuid.UUID,
    body: TaskUpdateRequest,
    settings: JobLibSettings,
) -> TaskResponse:
    """``PATCH /tasks/{id}``: apply one update.

    Raises:
        TaskNotFound: No such task.
        Forbidden: The caller neither owns the task's worker nor is a superuser.
        LeaseLost: ``worker_id`` was given and that worker no longer holds the task.
        InvalidTaskTransition: The transition table refuses the change.
    """
    return await _update_one(uow, actor, access, task_id, body, settings)


async def update_tasks(
    uow: UnitOfWork,
    actor: Actor,
    access: RoomAccess,
    items: list[TaskBatchUpdateItem],
    settings: JobLibSettings,
) -> list[TaskBatchUpdateOutcome]:
    """``PATCH /tasks``: apply several updates in one transaction, each on its own.

    A refused entry changes nothing and does not stop the others.
    """
    outcomes: list[TaskBatchUpdateOutcome] = []
    for item in items:
        body = TaskUpdateRequest.model_validate(item.model_dump(exclude={"task_id"}))
        try:
            async with uow.session.begin_nested():
                task = await _update_one(uow, actor, access, item.task_id, body, settings)
        except ProblemError as exc:
            outcomes.append(
                TaskBatchUpdateOutcome(task_id=item.task_id, ok=False, problem=exc.to_problem())
            )
        else:
            outcomes.append(TaskBatchUpdateOutcome(task_id=item.task_id, ok=True, task=task))
    return outcomes
