"""The sweeper: cleans up after vanished workers, expired leases and ignored cancellations.

Start :func:`run_sweeper` in the host's lifespan (``create_app`` does). Every pass runs in
its own transaction through :meth:`Database.write` and locks the rows it changes (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL), so several server processes may sweep at the same time: each
row is handled by exactly one of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from zndraw_joblib_core import (
    ACTIVE_STATUSES,
    INTERNAL_ROOM,
    TERMINAL_STATUSES,
    Event,
    ServiceUnavailable,
)
from zndraw_joblib_server.models import Job, Task, Worker, WorkerJobLink, status_is, utcnow
from zndraw_joblib_server.services.common import announce, release_all
from zndraw_joblib_server.services.jobs import soft_delete_orphans
from zndraw_joblib_server.services.liveness import stale_cutoff
from zndraw_joblib_server.services.workers import remove_workers
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import EventSink, UnitOfWork, get_database
from zndraw_joblib_server.storage.provider_cache import internal_cache_of, provider_cache_of
from zndraw_joblib_server.storage.records import TASKS, TaskRecord, fetch, save
from zndraw_joblib_server.storage.rules_sql import lease_expired_sql

__all__ = ["SweepReport", "run_sweeper", "sweep_once"]

logger = logging.getLogger("zndraw_joblib_server")

_BATCH = 500

RETENTION_BATCH = 1_000
"""Finished tasks deleted per statement (and transaction) by the retention step."""

RETENTION_BATCHES_PER_PASS = 10
"""At most this many retention batches per sweeper pass: a backlog is worked off over
several passes instead of holding the database in one long pass."""


@dataclass
class SweepReport:
    """What one sweeper pass changed.

    Attributes:
        workers_removed: Stale workers deleted.
        tasks_released: In-flight tasks of those workers, or with expired leases or past
            their timeout, that were requeued or failed.
        tasks_cancelled: Cancellations the worker did not acknowledge in time.
        jobs_deleted: Orphan jobs soft-deleted.
        tasks_purged: Finished tasks older than the retention period, deleted.
        events: The events emitted (already handed to the sink, if any).
    """

    workers_removed: int = 0
    tasks_released: int = 0
    tasks_cancelled: int = 0
    jobs_deleted: int = 0
    tasks_purged: int = 0
    events: list[Event] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The counts above by name (every attribute but ``events``), in that order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "events"}

    @property
    def changed(self) -> bool:
        """Whether the pass changed anything."""
        return any(self.counts().values())


async def _stale_workers(
    uow: UnitOfWork, settings: JobLibSettings, report: SweepReport, now: datetime
) -> None:
    workers = list(
        await uow.session.scalars(
            select(Worker)
            .where(Worker.last_heartbeat < stale_cutoff(settings, now))
            .limit(_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    released, deleted = await remove_workers(
        uow, workers, settings, "worker stopped sending heartbeats"
    )
    report.tasks_released += released
    report.jobs_deleted += deleted
    report.workers_removed += len(workers)


async def _expired_tasks(
    uow: UnitOfWork, settings: JobLibSettings, report: SweepReport, now: datetime
) -> None:
    grace = timedelta(seconds=settings.cancel_grace_seconds)
    tasks = await fetch(
        uow.session,
        select(TASKS)
        .where(
            status_is(*ACTIVE_STATUSES),
            or_(
                lease_expired_sql(TASKS.c.lease_expires_at, now),
                TASKS.c.deadline_at < now,
                and_(
                    TASKS.c.cancel_requested.is_(True),
                    TASKS.c.cancel_requested_at < now - grace,
                ),
            ),
        )
        .limit(_BATCH)
        .with_for_update(skip_locked=True),
    )
    reasons: list[tuple[TaskRecord, str]] = []
    for task in tasks:
        if task.cancel_requested:
            reasons.append((task, "the worker did not acknowledge the cancellation"))
            report.tasks_cancelled += 1
        elif task.deadline_at is not None and task.deadline_at < now:
            reasons.append((task, f"timed out after {task.timeout_seconds:g} s"))
            report.tasks_released += 1
        else:
            reasons.append((task, "lease expired"))
            report.tasks_released += 1
    requeued = release_all(reasons, now, settings)
    await save(uow.session, tasks)
    await announce(uow, tasks, now, requeued)


async def _orphan_jobs(
    uow: UnitOfWork, settings: JobLibSettings, report: SweepReport, now: datetime
) -> None:
    has_worker = select(WorkerJobLink.job_id).where(WorkerJobLink.job_id == Job.id).exists()
    candidates = list(
        await uow.session.scalars(
            select(Job.id)
            .where(Job.deleted.is_(False), Job.room_id != INTERNAL_ROOM, ~has_worker)
            .limit(_BATCH)
        )
    )
    report.jobs_deleted += len(await soft_delete_orphans(uow, candidates))


async def _purge_finished(uow: UnitOfWork, settings: JobLibSettings) -> int:
    """Delete one batch of tasks that finished before the retention period; how many.

    The candidates come from the partial index of finished tasks, oldest first (``SKIP
    LOCKED`` on PostgreSQL, so concurrent sweepers take different rows). Pending tasks are
    never deleted, so PostgreSQL's per-job pending counts (kept by triggers that count
    pending rows only) stay right.
    """
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    old = (
        select(Task.id)
        .where(status_is(*TERMINAL_STATUSES), Task.completed_at < cutoff)
        .order_by(Task.completed_at)
        .limit(RETENTION_BATCH)
        .with_for_update(skip_locked=True)
    )
    ids = list(await uow.session.scalars(old))
    if ids:
        await uow.session.execute(
            delete(Task)
            .where(Task.id.in_(ids), status_is(*TERMINAL_STATUSES))
            .execution_options(synchronize_session=False)
        )
    return len(ids)


async def sweep_once(
    session_maker: async_sessionmaker[AsyncSession],
    settings: JobLibSettings,
    sink: EventSink | None = None,
) -> SweepReport:
    """Run one sweeper pass and return what it changed.

    Args:
        session_maker: The host's session maker (the same one requests use).
        settings: The queue's settings.
        sink: Receives the events of each committed step.
    """
    db = get_database(session_maker, settings)
    report = SweepReport()
    # One instant for the pass: a worker whose heartbeat and lease renewal were one
    # (every heartbeat and claim) is then found stale exactly when its lease has expired,
    # and goes with its tasks in the first step rather than losing them alone in the next.
    now = utcnow()
    for step in (_stale_workers, _expired_tasks, _orphan_jobs):
        async with db.write(sink, keep_events=True) as uow:
            await step(uow, settings, report, now)
            report.events.extend(uow.events)
    for cache in (provider_cache_of(db), internal_cache_of(db)):
        await cache.sweep(settings.provider_cache_max_entries)
    if settings.retention_days > 0:
        for _ in range(RETENTION_BATCHES_PER_PASS):
            async with db.write() as uow:
                purged = await _purge_finished(uow, settings)
            report.tasks_purged += purged
            if purged < RETENTION_BATCH:
                break
    await db.store.fold_counts(db.write)
    return report


async def run_sweeper(
    session_maker: async_sessionmaker[AsyncSession],
    settings: JobLibSettings,
    sink: EventSink | None = None,
    observers: Sequence[Callable[[SweepReport], None]] = (),
) -> None:
    """Sweep every ``sweeper_interval_seconds`` until cancelled.

    A failing pass is logged and the loop goes on; each report of a pass that ran is handed
    to every one of ``observers`` (e.g. metrics). Start it as a task in the host's lifespan::

        task = asyncio.create_task(run_sweeper(session_maker, settings))

    Yield:
        task.cancel()
    """
    logger.info(
        "sweeper started: every %gs, workers time out after %gs",
        settings.sweeper_interval_seconds,
        settings.worker_timeout_seconds,
    )
    while True:
        await asyncio.sleep(settings.sweeper_interval_seconds)
        try:
            report = await sweep_once(session_maker, settings, sink)
        except ServiceUnavailable as exc:  # e.g. the SQLite file is gone: no traceback
            logger.warning("sweeper pass skipped: %s", exc.detail)
            continue
        except Exception:
            logger.exception("sweeper pass failed")
            continue
        for observe in observers:
            observe(report)
        if report.changed:
            logger.info(
                "sweeper: %d worker(s) removed, %d task(s) released, %d cancelled, "
                "%d job(s) deleted, %d finished task(s) purged",
                *report.counts().values(),
            )
