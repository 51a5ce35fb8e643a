"""Claiming tasks: one atomic statement, safe across processes.

The claim is a single ``UPDATE ... WHERE id IN (claimable CTE) RETURNING``. On PostgreSQL the
CTE selects ``FOR UPDATE SKIP LOCKED``, so concurrent claims in any number of processes
take different rows without waiting or retrying; on SQLite the statement runs inside the
process's write gate, which serialises it. Either way no task is handed out twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import Forbidden, TaskResponse, TaskStatus, WorkerNotFound
from zndraw_joblib_server.domain.rules import claim_key, lease_until
from zndraw_joblib_server.models import status_is, utcnow
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.common import announce, start_task, to_response
from zndraw_joblib_server.services.workers import owned_worker
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork
from zndraw_joblib_server.storage.caches import caches_of
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import TASKS, TaskRecord

__all__ = [
    "ClaimOffer",
    "claim_params",
    "claim_tasks",
    "claimed",
    "finds_its_job",
    "hand_off",
    "next_due",
]


@dataclass(frozen=True)
class ClaimOffer:
    """Who claims what: a waiting claim, and what a submit needs to claim on its behalf.

    (See :func:`hand_off`.)

    Attributes:
        actor: The caller of the (waiting) claim.
        worker_id: The worker it claims for.
        max_tasks: How many tasks it takes at most.
        start: Whether the tasks are started as they are claimed.
    """

    actor: Actor
    worker_id: uuid.UUID
    max_tasks: int
    start: bool = False


async def claim_tasks(
    uow: UnitOfWork,
    actor: Actor,
    worker_id: uuid.UUID,
    max_tasks: int,
    settings: JobLibSettings,
    *,
    likely: bool = False,
    start: bool = False,
) -> tuple[list[TaskResponse], list[uuid.UUID]]:
    """Claim up to ``max_tasks`` due pending tasks of the jobs the caller's worker serves.

    Order: highest priority first, then earliest ``run_after``, then oldest. ``likely``:
    a task probably waits (the claim was woken by a submit), which makes a claim in one
    statement worth trying first. ``start``: the tasks are started as they are claimed
    (``running``, as a ``PATCH`` to ``running`` right after the claim would leave them).

    Returns:
        The claimed tasks, and the ids of the jobs the worker serves.

    Raises:
        WorkerNotFound: No such worker.
        Forbidden: The worker belongs to somebody else.
    """
    session = uow.session
    now = utcnow()
    params = claim_params(worker_id, max_tasks, now, settings)
    tasks: list[TaskRecord] = []
    timeout = settings.worker_timeout_seconds
    if finds_its_job(session, worker_id, likely):
        tasks = await uow.store.claim(
            session, params, actor.id, None, start=start, worker_timeout=timeout
        )
        job_ids = [tasks[0].job_id] if tasks else []
    if not tasks:  # the general way: the worker's jobs first
        # Refresh the worker's heartbeat (claiming is a sign of life). Its row lock also makes
        # a concurrent ``DELETE /workers`` wait for this claim to commit (PostgreSQL), so it
        # then sees and releases what was claimed (see ``Store.touch_worker``).
        touched, job_ids = await uow.store.touch_worker(session, worker_id, actor.id, now)
        if not touched:  # raises WorkerNotFound or Forbidden
            await owned_worker(session, actor, worker_id, allow_superuser=False)
            raise WorkerNotFound(f"Worker {worker_id} not found.")  # pragma: no cover
        if job_ids:
            tasks = await uow.store.claim(
                session, params, actor.id, job_ids, start=start, worker_timeout=timeout
            )
        if not tasks:
            return [], job_ids
    return await claimed(uow, tasks, now, settings, start=start), job_ids


def claim_params(
    worker_id: uuid.UUID, max_tasks: int, now: datetime, settings: JobLibSettings
) -> dict[str, Any]:
    """The claim statement's parameters (see ``stores.claim_sql``), but its jobs."""
    return {
        "b_now": now,
        "b_worker": worker_id,
        "b_claimed_at": now,
        "b_lease_until": lease_until(now, None, settings.lease_seconds),
        "b_limit": max_tasks,
    }


def finds_its_job(session: AsyncSession, worker_id: uuid.UUID, likely: bool = False) -> bool:
    """Whether a claim for the worker should first try the statement that finds its job.

    By the worker's hint (its queue's, see QueueCaches; kept by the store's claims): a
    worker that served one job tries it (``alone``, which checks everything itself: the
    hint is a guess, never trusted) when its last claim found tasks, or when a task
    probably waits (``likely``: a waiting claim woken by a submit). Claiming nothing there
    means asking again the general way; an idle worker's empty claims go that way at once.
    """
    hint = caches_of(session).claim_hints.get(worker_id)
    return hint is not None and hint[0] and (hint[1] or likely)


async def claimed(
    uow: UnitOfWork,
    tasks: list[TaskRecord],
    now: datetime,
    settings: JobLibSettings,
    *,
    start: bool,
) -> list[TaskResponse]:
    """Finish tasks a claim statement took at ``now``: their own leases, events, answers.

    The statement set the default lease; tasks with their own lease (or, started, a
    timeout) are finished here.
    """
    session = uow.session
    uow.claimed += len(tasks)
    own_lease = [t for t in tasks if t.lease_seconds or (start and t.timeout_seconds is not None)]
    for task in own_lease:
        if start:
            start_task(task, now, settings)
        else:
            task.lease_expires_at = lease_until(now, task.lease_seconds, settings.lease_seconds)
    await uow.store.save(session, own_lease, skip_stale=True)  # a task released meanwhile
    tasks.sort(key=claim_key)
    names = await announce(uow, tasks, now)
    logged = caches_of(session).unrenderable
    return [to_response(t, names[t.job_id], logged=logged) for t in tasks]


async def hand_off(
    uow: UnitOfWork, job_id: uuid.UUID, new_ids: set[uuid.UUID], settings: JobLibSettings
) -> None:
    """Claim newly submitted tasks of ``job_id`` for claims waiting in this process.

    Runs in the submit's transaction, after its tasks are inserted. Each waiting claim it
    reserves is served exactly as its own claim would be (its worker's heartbeat, the jobs
    that worker serves, priority order, its ``max_tasks``); the waiting request answers with
    the tasks once the submit commits, without a transaction of its own, and gets nothing
    (so it claims for itself) if the submit rolls back. A waiter whose worker is gone or not
    its caller's is left to find that out itself. Waiting claims in other processes are
    woken as before for what is left.
    """
    if uow.parked is None or not new_ids:
        return  # (outside a transaction, the waiting claims are woken instead)
    key = f"job:{job_id}"
    handed = 0
    while handed < len(new_ids):
        sub = uow.parked.reserve(key)
        if sub is None or not isinstance(sub.offer, ClaimOffer):
            break
        uow.handoffs[sub] = []
        offer = sub.offer
        try:
            tasks, _ = await claim_tasks(
                uow,
                offer.actor,
                offer.worker_id,
                offer.max_tasks,
                settings,
                likely=True,  # the submit's tasks were just inserted
                start=offer.start,
            )
        except (WorkerNotFound, Forbidden):
            continue
        uow.handoffs[sub] = tasks
        if not tasks:
            break  # nothing due after all: no other waiter would find anything either
        handed += sum(1 for t in tasks if t.id in new_ids)
    uow.wake_fewer(key, handed)  # wake only as many other waiters as tasks are left


_NEXT_DUE = prebuilt(
    select(func.min(TASKS.c.run_after)).where(
        status_is(TaskStatus.PENDING),
        TASKS.c.job_id.in_(bindparam("ids", expanding=True)),
    )
)
"""When the earliest pending task of some jobs falls due, built once (every parked claim)."""


async def next_due(session: AsyncSession, job_ids: list[uuid.UUID]) -> datetime | None:
    """When the earliest pending task of ``job_ids`` becomes claimable (None: no such task)."""
    if not job_ids:
        return None
    due: datetime | None = (await execute(session, _NEXT_DUE, {"ids": job_ids})).scalar()
    return due
