"""The dashboard's read queries: one snapshot of rooms, jobs, workers, tasks and charts.

Everything is read in one short session, restricted to the rooms the caller may read (the
room access policy), and bounded (at most ``limit`` tasks, 200 workers, 500 rooms).
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import ACTIVE_STATUSES, TaskStatus
from zndraw_joblib_server.models import Job, Task, Worker, WorkerJobLink
from zndraw_joblib_server.services.access import Actor, RoomAccess

__all__ = ["MAX_TEXT", "RETRY_PREFIX", "load_state"]

MAX_TEXT = 2_000
"""Payloads and results longer than this (as JSON) are cut for the page."""

RETRY_PREFIX = "retry-"
"""The dashboard's retry submits with ``Idempotency-Key: retry-<task id>``."""

_MAX_ROOMS = 500
_MAX_WORKERS = 200
_MAX_CHART_ROWS = 50_000
GLOBAL = "@global"


def _clip(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, default=str)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def _retry_of(key: str | None) -> str | None:
    """The task a dashboard retry repeats (its key is ``<user>:retry-<task id>``)."""
    _user, _, raw = (key or "").partition(":")
    return raw.removeprefix(RETRY_PREFIX) if raw.startswith(RETRY_PREFIX) else None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


async def load_state(
    session: AsyncSession,
    actor: Actor,
    access: RoomAccess,
    *,
    now: datetime,
    alive_after: datetime,
    room: str | None = None,
    job: str | None = None,
    status: TaskStatus | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """The dashboard's data as one JSON-ready dict.

    Args:
        session: A read session.
        actor: The caller.
        access: The room access policy.
        now: The current time (UTC).
        alive_after: Workers whose last heartbeat is older count as stale
            (:func:`~zndraw_joblib_server.services.liveness.stale_cutoff`).
        room: Only tasks of this room.
        job: Only tasks of this job (full name).
        status: Only tasks in this state.
        limit: Most tasks returned (newest first).
    """
    candidates = await session.scalars(
        select(Job.room_id)
        .where(Job.deleted.is_(False))
        .union(select(Task.room_id).distinct())
        .limit(_MAX_ROOMS)
    )
    rooms = sorted({r for r in candidates if await access.can_read(actor, r)} | {GLOBAL})
    readable = set(rooms)
    writable = {r for r in rooms if await access.can_write(actor, r)}
    jobs = await _jobs(session, readable, alive_after)
    by_id = {j["id"]: j for j in jobs}
    workers = await _workers(session, actor, alive_after, by_id)

    where: list[Any] = [Task.room_id.in_(readable)]
    if room:
        where.append(Task.room_id == room)
    if job:
        ids = [j["id"] for j in jobs if j["full_name"] == job]
        where.append(Task.job_id.in_(ids))
    if status is not None:
        where.append(Task.status == status)
    total = await session.scalar(select(func.count()).select_from(Task).where(*where))
    rows = (
        await session.execute(
            select(Task, Job.room_id, Job.category, Job.name)
            .join(Job, Job.id == Task.job_id)
            .where(*where)
            .order_by(Task.created_at.desc(), Task.id.desc())
            .limit(limit)
        )
    ).all()
    tasks = [
        {
            "id": str(t.id),
            "job": f"{jr}:{jc}:{jn}",
            "room": t.room_id,
            "status": t.status.value,
            "progress": t.progress,
            "message": t.message,
            "attempt": t.attempt,
            "max_attempts": t.max_attempts,
            "priority": t.priority,
            "error": t.error[:MAX_TEXT] if t.error else None,
            "payload": _clip(t.payload),
            "result": _clip(t.result),
            "worker_id": str(t.worker_id) if t.worker_id else None,
            "created_at": _iso(t.created_at),
            "completed_at": _iso(t.completed_at),
            "cancel_requested": t.cancel_requested,
            "retry_of": _retry_of(t.idempotency_key),
            "can_cancel": not t.status.is_terminal
            and (actor.is_superuser or t.created_by_id == actor.id),
            "can_retry": t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
            and t.room_id in writable,
        }
        for t, jr, jc, jn in rows
    ]
    for j in jobs:
        j["id"] = str(j["id"])
    return {
        "now": now.isoformat(),
        "user": {"id": str(actor.id), "is_superuser": actor.is_superuser},
        "rooms": rooms,
        "jobs": jobs,
        "workers": workers,
        "tasks": tasks,
        "total": total or 0,
        "charts": await _charts(session, readable, now),
    }


async def _jobs(
    session: AsyncSession, readable: set[str], alive_after: datetime
) -> list[dict[str, Any]]:
    found = await session.scalars(
        select(Job).where(Job.deleted.is_(False), Job.room_id.in_(readable)).limit(1_000)
    )
    jobs = {
        j.id: {
            "id": j.id,
            "full_name": j.full_name,
            "room": j.room_id,
            "category": j.category,
            "name": j.name,
            **dict.fromkeys(("workers", "pending", "active"), 0),
        }
        for j in found
    }
    if not jobs:
        return []
    live = await session.execute(
        select(WorkerJobLink.job_id, func.count())
        .join(Worker, Worker.id == WorkerJobLink.worker_id)
        .where(WorkerJobLink.job_id.in_(jobs), Worker.last_heartbeat >= alive_after)
        .group_by(WorkerJobLink.job_id)
    )
    for job_id, count in live:
        jobs[job_id]["workers"] = count
    counts = await session.execute(
        select(Task.job_id, Task.status, func.count())
        .where(Task.job_id.in_(jobs), Task.status.in_([TaskStatus.PENDING, *ACTIVE_STATUSES]))
        .group_by(Task.job_id, Task.status)
    )
    for job_id, state, count in counts:
        jobs[job_id]["pending" if state == TaskStatus.PENDING else "active"] += count
    return sorted(jobs.values(), key=lambda j: j["full_name"])


async def _workers(
    session: AsyncSession,
    actor: Actor,
    alive_after: datetime,
    jobs: dict[Any, dict[str, Any]],
) -> list[dict[str, Any]]:
    query = select(Worker).order_by(Worker.last_heartbeat.desc()).limit(_MAX_WORKERS)
    if not actor.is_superuser:
        query = query.where(Worker.user_id == actor.id)
    workers = list(await session.scalars(query))
    if not workers:
        return []
    ids = [w.id for w in workers]
    links: dict[Any, list[str]] = {}
    for wid, jid in await session.execute(
        select(WorkerJobLink.worker_id, WorkerJobLink.job_id).where(
            WorkerJobLink.worker_id.in_(ids)
        )
    ):
        if jid in jobs:
            links.setdefault(wid, []).append(jobs[jid]["full_name"])
    current: dict[Any, list[str]] = {}
    for tid, wid in await session.execute(
        select(Task.id, Task.worker_id).where(
            Task.worker_id.in_(ids), Task.status.in_(list(ACTIVE_STATUSES))
        )
    ):
        current.setdefault(wid, []).append(str(tid))
    return [
        {
            "id": str(w.id),
            "last_heartbeat": _iso(w.last_heartbeat),
            "created_at": _iso(w.created_at),
            "stale": w.last_heartbeat < alive_after,
            "jobs": sorted(links.get(w.id, [])),
            "tasks": current.get(w.id, []),
            "can_remove": actor.is_superuser or w.user_id == actor.id,
        }
        for w in workers
    ]


async def _charts(session: AsyncSession, readable: set[str], now: datetime) -> dict[str, Any]:
    """Per minute over the last hour: tasks finished (completed, failed) and queue depth.

    The depth at the end of each minute is reconstructed from the tasks' submit and claim
    times (a task requeued after a claim counts from its last claim only).
    """
    start = now - timedelta(hours=1)
    completed = [0] * 60
    failed = [0] * 60
    rows = (
        await session.execute(
            select(Task.status, Task.created_at, Task.claimed_at, Task.completed_at)
            .where(
                Task.room_id.in_(readable),
                or_(
                    Task.created_at >= start,
                    Task.completed_at >= start,
                    Task.status == TaskStatus.PENDING,
                ),
            )
            .limit(_MAX_CHART_ROWS)
        )
    ).all()
    steps = [0] * 61  # depth changes per minute (a difference array)
    for state, created, claimed, finished in rows:
        if finished is not None and finished >= start:
            minute = min(59, int((finished - start).total_seconds() // 60))
            if state == TaskStatus.COMPLETED:
                completed[minute] += 1
            elif state == TaskStatus.FAILED:
                failed[minute] += 1
        left = claimed or (finished if state != TaskStatus.PENDING else None)
        # Pending at the end of minute m: created <= end(m) < left.
        first = max(0, math.ceil((created - start).total_seconds() / 60 - 1))
        stop = 60 if left is None else min(60, math.ceil((left - start).total_seconds() / 60 - 1))
        if first < stop:
            steps[first] += 1
            steps[stop] -= 1
    depth = list(itertools.accumulate(steps[:60]))
    return {"start": start.isoformat(), "completed": completed, "failed": failed, "depth": depth}
