"""Moving a zndraw-joblib 0.1.7 database (tables ``job``, ``task``, ``worker``, ...) over.

:func:`import_predecessor` copies the predecessor's jobs (soft-deleted ones too), workers,
their links and tasks into the queue's tables, keeping ids, statuses, timestamps,
payloads, errors, rooms, job names and user ids. Tasks a worker had claimed or was running
become pending again with that attempt counted (``attempt`` 1 of ``max_attempts`` 2), so
no work is lost silently. Rows already copied (same id) are skipped, so a second run adds
nothing. The predecessor's tables are only read. Providers (``provider``) are live
registrations and are not copied.

The predecessor may live in the same database (sharing zndraw-auth's ``user`` table: user
ids map directly) or another one; then its users are copied too, unless the target has an
account with the same e-mail (the imported rows then keep no user).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    inspect,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from zndraw_auth import User

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.models import Job, Task, Worker, WorkerJobLink, as_utc, new_task_row

__all__ = ["ImportReport", "PredecessorMissing", "import_predecessor"]

_PAGE = 1000

_OLD = MetaData()
_OLD_USER = Table(
    "user",
    _OLD,
    Column("id", Uuid),
    Column("email", String),
    Column("hashed_password", String),
    Column("is_active", Boolean),
    Column("is_superuser", Boolean),
    Column("is_verified", Boolean),
)
_OLD_JOB = Table(
    "job",
    _OLD,
    Column("id", Uuid),
    Column("room_id", String),
    Column("category", String),
    Column("name", String),
    Column("schema", JSON),
    Column("deleted", Boolean),
    Column("created_at", DateTime(timezone=True)),
)
_OLD_WORKER = Table(
    "worker",
    _OLD,
    Column("id", Uuid),
    Column("user_id", Uuid),
    Column("last_heartbeat", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True)),
)
_OLD_LINK = Table("worker_job_link", _OLD, Column("worker_id", Uuid), Column("job_id", Uuid))
_OLD_TASK = Table(
    "task",
    _OLD,
    Column("id", Uuid),
    Column("job_id", Uuid),
    Column("worker_id", Uuid),
    Column("room_id", String),
    Column("created_by_id", Uuid),
    Column("payload", JSON),
    Column("status", String),  # 0.1.7 stored the enum's names (PENDING, ...)
    Column("created_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("error", Text),
)
_FLAGS = ("is_active", "is_superuser", "is_verified")
_REQUIRED = ("job", "task", "worker", "worker_job_link")
_FINISHED = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


class PredecessorMissing(RuntimeError):
    """The source database has no zndraw-joblib 0.1.7 tables; the message names them."""


@dataclass
class ImportReport:
    """What an import copied (or, in a dry run, would copy)."""

    users: int = 0
    jobs: int = 0
    workers: int = 0
    links: int = 0
    tasks: int = 0
    requeued: int = 0
    """Tasks that were claimed or running and are pending again (counted in ``tasks``)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows not copied, by reason (already present rows are not counted here)."""

    def skip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` rows not copied for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def lines(self) -> list[str]:
        """The report as lines for a terminal."""
        return [
            f"users: {self.users}",
            f"jobs: {self.jobs}",
            f"workers: {self.workers}",
            f"worker-job links: {self.links}",
            f"tasks: {self.tasks} (claimed or running, now pending again: {self.requeued})",
            *(f"skipped, {reason}: {n}" for reason, n in sorted(self.skipped.items())),
        ]


async def _rows(conn: AsyncConnection, table: Table) -> list[Any]:
    return list((await conn.execute(select(table))).all())


async def _ids(conn: AsyncConnection, column: Any, among: Iterable[Any] | None = None) -> set[Any]:
    query = select(column)
    if among is not None:
        query = query.where(column.in_(list(among)))
    return set(await conn.scalars(query))


async def _insert(out: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows`` into ``table`` (no statement when there are none); how many."""
    if rows:
        await out.execute(table.insert(), rows)
    return len(rows)


async def import_predecessor(
    source: AsyncEngine, target: AsyncEngine, *, dry_run: bool = False
) -> ImportReport:
    """Copy a zndraw-joblib 0.1.7 database's jobs, workers, links and tasks (see module).

    Args:
        source: The predecessor's database (only read).
        target: This queue's database, at the code's schema revision.
        dry_run: Count what would be copied, change nothing.

    Returns:
        The counts.

    Raises:
        PredecessorMissing: ``source`` lacks the predecessor's tables.
    """
    async with source.connect() as conn:
        present = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        missing = [name for name in _REQUIRED if name not in present]
        if missing:
            raise PredecessorMissing(
                "no zndraw-joblib 0.1.7 tables in the source database "
                f"(missing: {', '.join(missing)})"
            )
        # In the same database zndraw-auth's user table is shared: user ids map directly.
        copy_users = source.url != target.url and "user" in present
        users = await _rows(conn, _OLD_USER) if copy_users else []
        jobs = await _rows(conn, _OLD_JOB)
        workers = await _rows(conn, _OLD_WORKER)
        links = await _rows(conn, _OLD_LINK)
    report = ImportReport()
    async with target.connect() as out, out.begin() as transaction:
        known_users = await _copy_users(out, users, report)
        job_ids = await _copy_jobs(out, jobs, report)
        worker_ids = await _copy_workers(out, workers, known_users, report)
        await _copy_links(out, links, job_ids, worker_ids, report)
        await _copy_tasks(source, out, job_ids, known_users, report)
        if dry_run:
            await transaction.rollback()
    return report


async def _copy_users(out: AsyncConnection, users: list[Any], report: ImportReport) -> set[Any]:
    """Copy the users the target lacks (another database); return the target's user ids."""
    table = User.__table__
    known = await _ids(out, table.c.id)
    emails = {str(e).lower() for e in await out.scalars(select(table.c.email))}
    rows = []
    for user in users:
        if user.id in known:
            continue
        if str(user.email).lower() in emails:
            report.skip("user whose e-mail has another account here")
            continue
        rows.append({**user._mapping, **{flag: bool(user._mapping[flag]) for flag in _FLAGS}})
        known.add(user.id)
        emails.add(str(user.email).lower())
    report.users = await _insert(out, table, rows)
    return known


async def _copy_jobs(
    out: AsyncConnection, jobs: list[Any], report: ImportReport
) -> dict[Any, Any]:
    """Copy the jobs; return predecessor job id -> job id here (same id, or same name)."""
    table = Job.__table__
    found = await out.execute(select(table.c.id, table.c.room_id, table.c.category, table.c.name))
    existing = {(row.room_id, row.category, row.name): row.id for row in found}
    by_id = set(existing.values())
    mapping: dict[Any, Any] = {}
    rows = []
    for job in jobs:
        key = (job.room_id, job.category, job.name)
        if job.id in by_id:
            mapping[job.id] = job.id
            continue
        if key in existing:
            mapping[job.id] = existing[key]
            continue
        if len(job.category) > 64 or len(job.name) > 255 or len(job.room_id) > 255:
            report.skip("job whose name is too long (and its tasks)")
            continue
        created = as_utc(job.created_at) or datetime.now(UTC)
        rows.append(
            {
                **job._mapping,
                "schema": job.schema if job.schema is not None else {},
                "deleted": bool(job.deleted),
                "owner_id": None,
                "created_at": created,
                "updated_at": created,
            }
        )
        mapping[job.id] = job.id
        existing[key] = job.id
    report.jobs = await _insert(out, table, rows)
    return mapping


async def _copy_workers(
    out: AsyncConnection, workers: list[Any], users: set[Any], report: ImportReport
) -> set[Any]:
    """Copy the workers; return the ids of the workers present here afterwards."""
    table = Worker.__table__
    present = await _ids(out, table.c.id)
    rows = []
    for worker in workers:
        if worker.id in present:
            continue
        if worker.user_id not in users:
            report.skip("worker whose user is not here")
            continue
        rows.append(
            {
                **worker._mapping,
                "created_at": as_utc(worker.created_at) or datetime.now(UTC),
                "last_heartbeat": as_utc(worker.last_heartbeat) or datetime.now(UTC),
            }
        )
        present.add(worker.id)
    report.workers = await _insert(out, table, rows)
    return present


async def _copy_links(
    out: AsyncConnection,
    links: list[Any],
    jobs: dict[Any, Any],
    workers: set[Any],
    report: ImportReport,
) -> None:
    table = WorkerJobLink.__table__
    present = {tuple(row) for row in (await out.execute(select(table))).all()}
    rows = []
    for link in links:
        job = jobs.get(link.job_id)
        if job is None or link.worker_id not in workers:
            report.skip("worker-job link of a worker or job not copied")
            continue
        if (link.worker_id, job) in present:
            continue
        rows.append({"worker_id": link.worker_id, "job_id": job})
        present.add((link.worker_id, job))
    report.links = await _insert(out, table, rows)


def _task_row(task: Any, job_id: Any, users: set[Any]) -> tuple[dict[str, Any], bool]:
    """A predecessor task as a row of ours, and whether it was requeued."""
    old = TaskStatus(str(task.status).lower())
    created = as_utc(task.created_at) or datetime.now(UTC)
    started, completed = as_utc(task.started_at), as_utc(task.completed_at)
    row = new_task_row(
        id=task.id,
        job_id=job_id,
        room_id=task.room_id,
        created_by_id=task.created_by_id if task.created_by_id in users else None,
        worker_id=task.worker_id,
        status=old,
        payload=task.payload if task.payload is not None else {},
        error=task.error,
        run_after=created,
        created_at=created,
        started_at=started,
        completed_at=completed,
    )
    if old in (TaskStatus.CLAIMED, TaskStatus.RUNNING):
        # Its worker is gone with the old server: queue it again, the lost try counted.
        row.update(
            status=TaskStatus.PENDING,
            attempt=1,
            max_attempts=2,
            started_at=None,
            completed_at=None,
            message=f"was {old.value} on zndraw-joblib 0.1.7 when moved over; queued again",
        )
        return row, True
    if old in _FINISHED:
        ran = old != TaskStatus.CANCELLED or task.worker_id is not None or started is not None
        row.update(
            attempt=1 if ran else 0,
            claimed_at=started if task.worker_id is not None else None,
            completed_at=completed or started or created,
        )
    return row, False


async def _copy_tasks(
    source: AsyncEngine,
    out: AsyncConnection,
    jobs: dict[Any, Any],
    users: set[Any],
    report: ImportReport,
) -> None:
    """Copy the tasks page by page (each page read in its own short source transaction)."""
    table = Task.__table__
    after: uuid.UUID | None = None
    while True:
        query = select(_OLD_TASK).order_by(_OLD_TASK.c.id).limit(_PAGE)
        if after is not None:
            query = query.where(_OLD_TASK.c.id > after)
        async with source.connect() as conn:
            page = list((await conn.execute(query)).all())
        if not page:
            return
        after = page[-1].id
        present = await _ids(out, table.c.id, (task.id for task in page))
        rows = []
        for task in page:
            if task.id in present:
                continue
            job = jobs.get(task.job_id)
            if job is None:
                report.skip("task of a job not copied")
                continue
            row, requeued = _task_row(task, job, users)
            rows.append(row)
            report.requeued += requeued
        report.tasks += await _insert(out, table, rows)
