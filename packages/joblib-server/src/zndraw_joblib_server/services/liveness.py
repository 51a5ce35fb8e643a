"""Which workers are live, written once for the sweeper, job answers and submits.

A worker is live while its last heartbeat (or claim) is within ``worker_timeout_seconds``;
the sweeper removes the others. Job answers count a job's live workers, the job list can be
filtered by them, and a host may refuse submits to a job that has none.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import INTERNAL_ROOM, NoWorkersAvailable
from zndraw_joblib_server.models import Job, Worker, WorkerJobLink, utcnow
from zndraw_joblib_server.settings import JobLibSettings

__all__ = [
    "check_live_workers",
    "has_live_worker",
    "stale_cutoff",
    "worker_is_live",
]


def stale_cutoff(settings: JobLibSettings, now: datetime) -> datetime:
    """Workers whose last heartbeat is older than this are stale (not live)."""
    return now - timedelta(seconds=settings.worker_timeout_seconds)


def worker_is_live(settings: JobLibSettings, now: datetime) -> ColumnElement[bool]:
    """SQL: the :class:`Worker` row is live at ``now`` (the negation of the sweeper's rule)."""
    return Worker.last_heartbeat >= stale_cutoff(settings, now)


def _live_links(job_id: Any, settings: JobLibSettings, now: datetime) -> Select[Any]:
    """SQL: the links of live workers to the job ``job_id`` (an id, or a correlated column)."""
    return (
        select(WorkerJobLink.job_id)
        .join(Worker, Worker.id == WorkerJobLink.worker_id)
        .where(WorkerJobLink.job_id == job_id, worker_is_live(settings, now))
    )


def has_live_worker(settings: JobLibSettings, now: datetime) -> ColumnElement[bool]:
    """SQL, correlated to :class:`Job`: at least one live worker serves the job."""
    return _live_links(Job.id, settings, now).correlate(Job).exists()


async def check_live_workers(
    session: AsyncSession, job_id: uuid.UUID, room_id: str, settings: JobLibSettings
) -> None:
    """Refuse a submit to a job without a live worker, when the host asked for that.

    Off by default (``refuse_submit_without_workers``); jobs in ``@internal`` are never
    refused here (the host runs them).

    Raises:
        NoWorkersAvailable: The setting is on and no live worker serves the job.
    """
    if not settings.refuse_submit_without_workers or room_id == INTERNAL_ROOM:
        return
    live = (await session.execute(_live_links(job_id, settings, utcnow()).limit(1))).first()
    if live is None:
        raise NoWorkersAvailable(
            "No live worker serves this job; nothing was submitted. Start a worker for it "
            "and retry."
        )
