"""Task updates from workers: status transitions, progress, results, retries, fencing."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    ACTIVE_STATUSES,
    ClaimNextResponse,
    Forbidden,
    InvalidTaskTransition,
    LeaseLost,
    ProblemError,
    TaskBatchUpdateItem,
    TaskBatchUpdateOutcome,
    TaskClaimRequest,
    TaskNotFound,
    TaskResponse,
    TaskStatus,
    TaskUpdateRequest,
)
from zndraw_joblib_server.domain.rules import (
    By,
    Effect,
    after_lost_attempt,
    effect_of,
    lease_expired,
    lease_until,
)
from zndraw_joblib_server.models import Worker, utcnow
from zndraw_joblib_server.services import waiting
from zndraw_joblib_server.services.access import Actor, RoomAccess
from zndraw_joblib_server.services.common import announce, requeue, start_task
from zndraw_joblib_server.services.reports import check_limits, report, report_and_claim
from zndraw_joblib_server.services.tasks import cancel_record, check_cancel, respond_all
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import Database, EventSink, UnitOfWork
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import Owners, StaleRecord, TaskRecord

__all__ = ["update_batch", "update_one", "update_task", "update_tasks"]


_WORKERS = Worker.__table__
_OWNERS = prebuilt(
    select(_WORKERS.c.id, _WORKERS.c.user_id).where(
        _WORKERS.c.id.in_(bindparam("ids", expanding=True))
    )
)
"""Owners of workers, built once (for updates naming a worker that holds none of their tasks)."""


def _fence(task: TaskRecord, body: TaskUpdateRequest, now: datetime) -> bool:
    """Check the caller's worker still holds the lease; True for a harmless repeat."""
    if task.worker_id == body.worker_id and task.status == body.status and task.status.is_terminal:
        return True  # the same final report again (a retried request): answer, change nothing
    if task.worker_id != body.worker_id or task.status not in ACTIVE_STATUSES:
        raise LeaseLost(f"Worker {body.worker_id} no longer holds task {task.id}.")
    if lease_expired(task.lease_expires_at, now):
        raise LeaseLost(f"The lease of worker {body.worker_id} on task {task.id} expired.")
    return False


def _effect(task: TaskRecord, target: TaskStatus | None, actor: Actor) -> Effect:
    """The transition table's effect of the update; refuse one it does not allow."""
    by = By.SUPERUSER if actor.is_superuser else By.WORKER
    effect = effect_of(task.status, target, by)
    if effect is not None:
        return effect
    if target is None:
        raise InvalidTaskTransition(
            f"Progress can only be reported while running (task is '{task.status.value}')."
        )
    if effect_of(task.status, target, By.SUPERUSER) is not None:
        raise Forbidden("Only a superuser may claim a task through PATCH; use /tasks/claim.")
    raise InvalidTaskTransition(
        f"Cannot transition from '{task.status.value}' to '{target.value}'."
    )


def _finish(task: TaskRecord, target: TaskStatus, body: TaskUpdateRequest, now: datetime) -> None:
    """A terminal state reported by the worker (or a superuser), or reached by a retry."""
    task.completed_at = now
    task.lease_expires_at = None
    task.deadline_at = None
    if target == TaskStatus.COMPLETED:
        task.result = body.result
    if body.error is not None:
        task.error = body.error
    elif target == TaskStatus.CANCELLED and body.retry:  # a retry the submitter stopped
        task.error = "Cancelled on request."
    elif target == TaskStatus.CANCELLED and task.cancel_requested:
        task.error = task.error or "Cancelled on request."
    task.status = target


def _apply(
    task: TaskRecord,
    body: TaskUpdateRequest,
    actor: Actor,
    now: datetime,
    settings: JobLibSettings,
) -> bool:
    """Change the task as the update asks (the transition table's effect).

    Returns:
        True when the task went back to pending.
    """
    target = body.status
    effect = _effect(task, target, actor)
    if body.progress is not None:
        task.progress = body.progress
    if body.message is not None:
        task.message = body.message
    task.version += 1
    if effect == Effect.CLAIM:
        task.status = TaskStatus.CLAIMED
        task.attempt += 1
        task.claimed_at = now
        task.lease_expires_at = lease_until(now, task.lease_seconds, settings.lease_seconds)
    elif effect == Effect.START:
        task.status = TaskStatus.RUNNING
        start_task(task, now, settings)
    elif effect == Effect.FAIL and body.retry:
        after = after_lost_attempt(task.cancel_requested, task.attempt, task.max_attempts)
        if after == TaskStatus.PENDING:
            task.error = body.error or "Failed; retry requested."
            requeue(task, now, settings)
            return True
        _finish(task, after, body, now)  # cancelled (asked to stop) or failed for good
    elif effect in _FINISHING:
        assert target is not None
        _finish(task, target, body, now)
    return False


_FINISHING = frozenset({Effect.FINISH, Effect.FAIL, Effect.CANCEL})
"""Effects of a ``PATCH`` that end the task (a failure without retry included)."""


Outcome = TaskRecord | ProblemError
"""What became of one update: the task right after it, or why it was refused."""


async def _update_one(
    actor: Actor,
    access: RoomAccess,
    task: TaskRecord | None,
    task_id: uuid.UUID,
    body: TaskUpdateRequest,
    owners: Owners,
    now: datetime,
    settings: JobLibSettings,
) -> tuple[bool, bool]:
    """Check and apply one update to ``task`` (loaded and locked).

    Every check comes before the first change, so a refused update changes nothing.

    Returns:
        Whether the task changed, and whether it became claimable again.
    """
    if task is None:
        raise TaskNotFound(f"Task {task_id} not found.")
    if body.worker_id is not None:
        # Fencing first: a worker that lost the task learns so (409), whoever it belongs to.
        owner = owners.get(body.worker_id)
        if owner is not None and owner != actor.id and not actor.is_superuser:
            raise Forbidden("This worker belongs to a different user.")
        if _fence(task, body, now):
            return False, False
        if owner is None:
            raise LeaseLost(f"Worker {body.worker_id} no longer exists.")
    elif not actor.is_superuser and (
        task.worker_id is None or owners.get(task.worker_id) != actor.id
    ):
        if body.status == TaskStatus.CANCELLED and task.created_by_id == actor.id:
            await check_cancel(actor, access, task)
            return cancel_record(task, now), False
        raise Forbidden("Only the owner of the task's worker (or a superuser) may update it.")
    check_limits(body, settings)
    return True, _apply(task, body, actor, now, settings)


async def _update_all(
    uow: UnitOfWork,
    actor: Actor,
    access: RoomAccess,
    items: list[tuple[uuid.UUID, TaskUpdateRequest]],
    settings: JobLibSettings,
    *,
    snapshots: bool = True,
) -> list[Outcome | None]:
    """Apply updates in order, each on its own, with one read and one write per kind.

    Each outcome is the task right after its update (None with ``snapshots=False``), or
    the problem that refused it.
    """
    session = uow.session
    ids = [task_id for task_id, _ in items]
    tasks, owners = await uow.store.load_for_update(session, ids, light=not snapshots)
    # Workers named by an update that holds none of the tasks (their lease is lost anyway,
    # but a stranger's worker answers 403, not 409) need a lookup of their own.
    named = {body.worker_id for _, body in items if body.worker_id is not None} - owners.keys()
    if named:
        owners.update((await execute(session, _OWNERS, {"ids": list(named)})).tuples().all())
    now = utcnow()
    outcomes: list[Outcome | None] = []
    changed: dict[uuid.UUID, TaskRecord] = {}
    claimable: dict[uuid.UUID, TaskRecord] = {}
    for task_id, body in items:
        task = tasks.get(task_id)
        try:
            did_change, requeued = await _update_one(
                actor, access, task, task_id, body, owners, now, settings
            )
        except ProblemError as exc:
            outcomes.append(exc)
            continue
        assert task is not None
        if did_change:
            changed[task_id] = task
        if requeued:
            claimable[task_id] = task
        outcomes.append(task.copy() if snapshots else None)
    await uow.store.save(session, changed.values())
    await announce(uow, list(changed.values()), now, claimable.values())
    return outcomes


async def _responses(
    session: AsyncSession, outcomes: list[Outcome | None]
) -> list[TaskResponse | ProblemError]:
    answers = iter(await respond_all(session, [o for o in outcomes if isinstance(o, TaskRecord)]))
    return [o if isinstance(o, ProblemError) else next(answers) for o in outcomes]


async def update_one(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    access: RoomAccess,
    task_id: uuid.UUID,
    body: TaskUpdateRequest,
    settings: JobLibSettings,
    claim: TaskClaimRequest | None = None,
    wait: float | None = None,
) -> tuple[TaskResponse, ClaimNextResponse | None]:
    """``PATCH /tasks/{id}`` in its own write, then ``claim`` (``claim_next``) if asked.

    The update runs outside a transaction first where the store can (PostgreSQL), applied
    only to the version it read; a task changed meanwhile (:class:`StaleRecord`, nothing
    written) is updated again in a transaction. The claim's first look follows in the same
    write (in a transaction both commit together; where the store chains them, a worker's
    usual report and its claim are one statement, see :func:`.reports.report_and_claim`);
    with ``wait`` a claim that found nothing then waits for work
    (:func:`~.waiting.claim_after`). Raises as :func:`update_task`.
    """
    seq, waits = db.notifier.seq, wait is not None
    async with db.write(sink, standalone=True) as uow:
        task: TaskResponse | None = None
        first: waiting.FirstClaim | ClaimNextResponse | None = None
        chained = claim and await report_and_claim(uow, actor, task_id, body, claim, settings)
        if chained:  # the report and the claim in one statement
            task, tasks = chained
            first = waiting.FirstClaim(tasks, [], None, seq) if tasks else None  # (no wait)
        else:
            with contextlib.suppress(StaleRecord):  # changed meanwhile: nothing was written
                task = await update_task(uow, actor, access, task_id, body, settings)
        if task is not None and first is None:
            first = await waiting.claim_within(uow, actor, claim, settings, seq=seq, waits=waits)
    if task is None:  # again, in a transaction
        async with db.write(sink) as uow:
            task = await update_task(uow, actor, access, task_id, body, settings)
            first = await waiting.claim_within(uow, actor, claim, settings, seq=seq, waits=waits)
    return task, await waiting.claim_after(db, sink, actor, claim, wait, settings, first)


async def update_batch(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    access: RoomAccess,
    items: list[TaskBatchUpdateItem],
    claim: TaskClaimRequest | None,
    settings: JobLibSettings,
    *,
    wait: float | None = None,
    minimal: bool = False,
) -> tuple[list[TaskBatchUpdateOutcome], ClaimNextResponse | None]:
    """``PATCH /tasks`` in one write (:func:`update_tasks`); ``claim`` as in :func:`update_one`."""
    seq, waits = db.notifier.seq, wait is not None
    async with db.write(sink) as uow:
        outcomes = await update_tasks(uow, actor, access, items, settings, minimal=minimal)
        first = await waiting.claim_within(uow, actor, claim, settings, seq=seq, waits=waits)
    return outcomes, await waiting.claim_after(db, sink, actor, claim, wait, settings, first)


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
    reported = await report(uow, actor, task_id, body, settings)
    if reported is not None:
        return reported
    outcomes = await _update_all(uow, actor, access, [(task_id, body)], settings)
    (answer,) = await _responses(uow.session, outcomes)
    if isinstance(answer, ProblemError):
        raise answer
    return answer


async def update_tasks(
    uow: UnitOfWork,
    actor: Actor,
    access: RoomAccess,
    items: list[TaskBatchUpdateItem],
    settings: JobLibSettings,
    *,
    minimal: bool = False,
) -> list[TaskBatchUpdateOutcome]:
    """``PATCH /tasks``: apply several updates in one transaction, each on its own.

    A refused entry changes nothing and does not stop the others; entries naming the same
    task apply in order. With ``minimal``, applied entries carry no task.
    """
    bodies: list[tuple[uuid.UUID, TaskUpdateRequest]] = [(item.task_id, item) for item in items]
    outcomes = await _update_all(uow, actor, access, bodies, settings, snapshots=not minimal)
    answers = outcomes if minimal else await _responses(uow.session, outcomes)
    return [
        TaskBatchUpdateOutcome(task_id=item.task_id, ok=False, problem=answer.to_problem())
        if isinstance(answer, ProblemError)
        else TaskBatchUpdateOutcome(task_id=item.task_id, ok=True, task=answer)
        for item, answer in zip(items, answers, strict=True)
    ]
