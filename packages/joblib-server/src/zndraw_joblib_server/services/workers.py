"""Creating, heartbeating, removing and listing workers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    ACTIVE_STATUSES,
    Forbidden,
    JobsChanged,
    Page,
    WorkerNotFound,
    WorkerResponse,
    WorkerSummary,
    visible_rooms,
)
from zndraw_joblib_server.domain.rules import lease_until
from zndraw_joblib_server.models import Job, Task, Worker, WorkerJobLink, status_is, utcnow
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.common import (
    announce,
    count_rows,
    page_of,
    release_all,
    validate_room,
)
from zndraw_joblib_server.services.jobs import _worker_for, soft_delete_orphans, unlink_worker
from zndraw_joblib_server.services.providers import drop_worker_providers
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork
from zndraw_joblib_server.storage.records import TASKS, fetch, save
from zndraw_joblib_server.storage.rules_sql import lease_held_sql

__all__ = [
    "create_worker",
    "heartbeat",
    "list_room_workers",
    "list_workers",
    "owned_worker",
    "remove_worker",
    "remove_workers",
]


async def create_worker(uow: UnitOfWork, actor: Actor, settings: JobLibSettings) -> WorkerResponse:
    """Create a worker owned by ``actor`` (within the per-user worker quota)."""
    worker = await _worker_for(uow, actor, None, settings)
    return WorkerResponse(id=worker.id, last_heartbeat=worker.last_heartbeat)


async def owned_worker(
    session: AsyncSession, actor: Actor, worker_id: uuid.UUID, *, allow_superuser: bool
) -> Worker:
    """Load a worker the caller may act for.

    Raises:
        WorkerNotFound: No such worker.
        Forbidden: The worker belongs to somebody else (superusers pass when allowed).
    """
    worker = await session.get(Worker, worker_id)
    if worker is None:
        raise WorkerNotFound(f"Worker {worker_id} not found.")
    if worker.user_id != actor.id and not (allow_superuser and actor.is_superuser):
        raise Forbidden("This worker belongs to a different user.")
    return worker


async def heartbeat(
    uow: UnitOfWork, actor: Actor, worker_id: uuid.UUID, settings: JobLibSettings
) -> WorkerResponse:
    """Record a heartbeat and extend the leases of the worker's in-flight tasks.

    Leases that already ran out are not revived: the sweeper releases those tasks. A task
    another transaction holds (a completion in flight, say) is left for the next beat:
    waiting for it while holding the worker's row could deadlock with that transaction,
    which may beat the worker next (a completion carrying ``claim_next``).
    """
    session = uow.session
    worker = await owned_worker(session, actor, worker_id, allow_superuser=False)
    now = utcnow()
    worker.last_heartbeat = now
    held = select(Task.id, Task.lease_seconds, Task.cancel_requested).where(
        Task.worker_id == worker_id,
        status_is(*ACTIVE_STATUSES),
        Task.lease_expires_at.is_not(None),  # no end: nothing to renew
        lease_held_sql(Task.lease_expires_at, now),
    )
    rows = (await session.execute(held)).all()
    renew: dict[datetime, list[uuid.UUID]] = {}
    for task_id, lease_seconds, _ in rows:
        until = lease_until(now, lease_seconds, settings.lease_seconds)
        renew.setdefault(until, []).append(task_id)
    renewed: list[datetime] = []
    for until, ids in renew.items():
        free = select(Task.id).where(Task.id.in_(ids)).with_for_update(skip_locked=True)
        result = await session.execute(
            update(Task)
            .where(Task.id.in_(free))
            .values(lease_expires_at=until)
            .returning(Task.lease_expires_at)
            .execution_options(synchronize_session=False)
        )
        renewed.extend(end for end in result.scalars() if end is not None)
    return WorkerResponse(
        id=worker.id,
        last_heartbeat=now,
        cancel_requested=[task_id for task_id, _, cancel in rows if cancel],
        lease_expires_at=min(renewed, default=None),
    )


async def remove_workers(
    uow: UnitOfWork, workers: list[Worker], settings: JobLibSettings, reason: str
) -> tuple[int, int]:
    """Release the workers' in-flight tasks, unlink and delete them, soft-delete orphan jobs.

    Returns:
        How many tasks were released and how many jobs were soft-deleted.
    """
    if not workers:
        return 0, 0
    session = uow.session
    ids = [w.id for w in workers]
    # Lock the workers first: a claim in flight holds its worker's row, so this waits for
    # it to commit and then sees (and releases) what it claimed (PostgreSQL).
    await session.execute(select(Worker.id).where(Worker.id.in_(ids)).with_for_update())
    now = utcnow()
    in_flight = select(TASKS).where(TASKS.c.worker_id.in_(ids), status_is(*ACTIVE_STATUSES))
    tasks = await fetch(session, in_flight.with_for_update())
    requeued = release_all([(task, reason) for task in tasks], now, settings)
    await save(session, tasks)
    await announce(uow, tasks, now, requeued)
    await drop_worker_providers(uow, ids)  # before the workers: readers are answered at once
    job_ids: set[uuid.UUID] = set()
    for worker in workers:
        job_ids.update(await unlink_worker(uow, worker.id))
        await session.delete(worker)
    await session.flush()
    deleted = await soft_delete_orphans(uow, sorted(job_ids))
    rooms = await session.scalars(select(Job.room_id).where(Job.id.in_(job_ids)).distinct())
    uow.events.extend(JobsChanged(room_id=room) for room in rooms)
    return len(tasks), len(deleted)


async def remove_worker(
    uow: UnitOfWork, actor: Actor, worker_id: uuid.UUID, settings: JobLibSettings
) -> None:
    """``DELETE /workers/{id}``: the owner or a superuser removes a worker."""
    worker = await owned_worker(uow.session, actor, worker_id, allow_superuser=True)
    await remove_workers(uow, [worker], settings, "worker disconnected")


async def _page(
    session: AsyncSession, where: list[Any], limit: int, offset: int
) -> Page[WorkerSummary]:
    total = await count_rows(session, Worker, where)
    items: list[WorkerSummary] = []
    if limit:
        links = select(func.count()).where(WorkerJobLink.worker_id == Worker.id)
        count = links.correlate(Worker).scalar_subquery()
        page = page_of(select(Worker, count).where(*where), Worker, limit, offset)
        rows = await session.execute(page)
        items = [
            WorkerSummary(
                id=w.id, last_heartbeat=w.last_heartbeat, job_count=n, created_at=w.created_at
            )
            for w, n in rows
        ]
    return Page[WorkerSummary](items=items, total=total, limit=limit, offset=offset)


async def list_workers(session: AsyncSession, limit: int, offset: int) -> Page[WorkerSummary]:
    """Every worker, newest first."""
    return await _page(session, [], limit, offset)


async def list_room_workers(
    session: AsyncSession, room_id: str, limit: int, offset: int
) -> Page[WorkerSummary]:
    """Workers serving an active job visible from ``room_id``, newest first."""
    validate_room(room_id)
    serving = (
        select(WorkerJobLink.worker_id)
        .join(Job, Job.id == WorkerJobLink.job_id)
        .where(Job.room_id.in_(visible_rooms(room_id)), Job.deleted.is_(False))
    )
    return await _page(session, [Worker.id.in_(serving)], limit, offset)
