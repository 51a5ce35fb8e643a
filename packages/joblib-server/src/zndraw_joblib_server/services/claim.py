"""Claiming tasks: one atomic statement, safe across processes.

The claim is a single ``UPDATE ... WHERE id IN (claimable CTE) RETURNING``. On PostgreSQL the
CTE selects ``FOR UPDATE SKIP LOCKED``, so concurrent claims in any number of processes
take different rows without waiting or retrying; on SQLite the statement runs inside the
process's write gate, which serialises it. Either way no task is handed out twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskResponse, TaskStatus, WorkerNotFound
from zndraw_joblib_server.models import Task, Worker, WorkerJobLink, utcnow
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.common import announce, to_response
from zndraw_joblib_server.services.workers import owned_worker
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork

__all__ = ["claim_tasks", "claimable_jobs", "next_due"]


async def claimable_jobs(session: AsyncSession, worker_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids of the jobs the worker serves."""
    rows = await session.execute(
        select(WorkerJobLink.job_id).where(WorkerJobLink.worker_id == worker_id)
    )
    return list(rows.scalars())


async def _touch_worker(
    session: AsyncSession, actor: Actor, worker_id: uuid.UUID, now: datetime
) -> None:
    """Refresh the caller's worker's heartbeat (claiming is a sign of life).

    The row lock also makes a concurrent ``DELETE /workers`` wait for this claim to commit
    (PostgreSQL), so it then sees and releases what was claimed.

    Raises:
        WorkerNotFound: No such worker.
        Forbidden: The worker belongs to somebody else.
    """
    touched = await session.execute(
        update(Worker)
        .where(Worker.id == worker_id, Worker.user_id == actor.id)
        .values(last_heartbeat=now)
        .returning(Worker.id)
        .execution_options(synchronize_session=False)
    )
    if touched.scalar_one_or_none() is None:
        await owned_worker(session, actor, worker_id, allow_superuser=False)
        raise WorkerNotFound(f"Worker {worker_id} not found.")  # pragma: no cover


async def claim_tasks(
    uow: UnitOfWork,
    actor: Actor,
    worker_id: uuid.UUID,
    max_tasks: int,
    settings: JobLibSettings,
) -> tuple[list[TaskResponse], list[uuid.UUID]]:
    """Claim up to ``max_tasks`` due pending tasks of the jobs the caller's worker serves.

    Order: highest priority first, then earliest ``run_after``, then oldest.

    Returns:
        The claimed tasks, and the ids of the jobs the worker serves.

    Raises:
        WorkerNotFound: No such worker.
        Forbidden: The worker belongs to somebody else.
    """
    session = uow.session
    now = utcnow()
    await _touch_worker(session, actor, worker_id, now)
    job_ids = await claimable_jobs(session, worker_id)
    if not job_ids:
        return [], []
    # One job (the usual case) as an equality, so both databases walk the claim index in
    # claim order and stop after max_tasks rows, however long the queue.
    served = Task.job_id == job_ids[0] if len(job_ids) == 1 else Task.job_id.in_(job_ids)
    lease = timedelta(seconds=settings.lease_seconds)
    claimable = (
        select(Task.id)
        .where(
            Task.status == TaskStatus.PENDING,
            served,
            Task.run_after <= now,
        )
        .order_by(Task.priority.desc(), Task.run_after, Task.created_at)
        .limit(max_tasks)
        .with_for_update(skip_locked=True)
        .cte("claimable")
    )
    stmt = (
        update(Task)
        .where(Task.id.in_(select(claimable.c.id)))
        .values(
            status=TaskStatus.CLAIMED,
            worker_id=worker_id,
            attempt=Task.attempt + 1,
            claimed_at=now,
            lease_expires_at=now + lease,
            version=Task.version + 1,
        )
        .returning(Task)
        .execution_options(synchronize_session=False)
    )
    tasks = list((await session.execute(stmt)).scalars())
    if not tasks:
        return [], job_ids
    for task in tasks:
        if task.lease_seconds is not None:
            task.lease_expires_at = now + timedelta(seconds=task.lease_seconds)
    await session.flush()
    tasks.sort(key=lambda t: (-t.priority, t.run_after, t.created_at))
    names = await announce(uow, tasks, now)
    return [to_response(t, names[t.job_id]) for t in tasks], job_ids


async def next_due(session: AsyncSession, job_ids: list[uuid.UUID]) -> datetime | None:
    """When the earliest pending task of ``job_ids`` becomes claimable (None: no such task)."""
    if not job_ids:
        return None
    return (
        await session.execute(
            select(func.min(Task.run_after)).where(
                Task.status == TaskStatus.PENDING, Task.job_id.in_(job_ids)
            )
        )
    ).scalar()
