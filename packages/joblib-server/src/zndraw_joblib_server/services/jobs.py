"""Registering, resolving and listing jobs."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    MAX_CATEGORY_LENGTH,
    Forbidden,
    InvalidCategory,
    InvalidJobName,
    JobNotFound,
    JobRegisterRequest,
    JobResponse,
    JobsChanged,
    JobSummary,
    Page,
    SchemaConflict,
    TaskStatus,
    WorkerNotFound,
    build_job_name,
    is_valid_job_part,
    parse_job_name,
    visible_rooms,
)
from zndraw_joblib_server.models import Job, Task, Worker, WorkerJobLink, utcnow
from zndraw_joblib_server.services.access import Actor, JobAccess, check_serve
from zndraw_joblib_server.services.common import (
    count_rows,
    find_or_insert,
    job_named,
    page_of,
    remember_name,
    validate_room,
)
from zndraw_joblib_server.services.internal import check_internal_link, check_serves_internal
from zndraw_joblib_server.services.liveness import has_live_worker, worker_is_live
from zndraw_joblib_server.services.quotas import check_worker_quota
from zndraw_joblib_server.services.validation import check_schema
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork
from zndraw_joblib_server.storage.caches import SizedCache, caches_of
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.prebuilt import prebuilt

__all__ = [
    "ActiveJob",
    "Serving",
    "check_registration",
    "forget_job",
    "get_job",
    "job_response",
    "list_jobs",
    "register_job",
    "resolve_job",
    "soft_delete_orphans",
    "unlink_worker",
    "workers_of",
]


async def check_registration(
    actor: Actor,
    room_id: str,
    body: JobRegisterRequest,
    settings: JobLibSettings,
    cache: SizedCache | None = None,
) -> None:
    """Check a registration before any database work (the schema off the event loop).

    ``cache``: the queue's compiled schemas (its ``QueueCaches.schemas``), which keep the
    compiled schema for the payloads to come.

    Raises:
        ProblemError: The room, category, name or schema is refused, or the caller may not
            register here.
    """
    validate_room(room_id)
    if room_id == GLOBAL_ROOM and not actor.is_superuser:
        raise Forbidden("Only a superuser may register @global jobs.")
    if room_id == INTERNAL_ROOM:
        check_serves_internal(actor, settings)
    elif body.category not in settings.allowed_categories:
        raise InvalidCategory(
            f"Category {body.category!r} is not allowed; allowed: "
            f"{', '.join(settings.allowed_categories)}."
        )
    category_ok = is_valid_job_part(body.category, MAX_CATEGORY_LENGTH)
    if not category_ok or not is_valid_job_part(body.name):
        raise InvalidJobName(
            f"Invalid job name {body.name!r}: it must be 1 to 255 characters without ':', "
            "'/', control characters or surrounding spaces."
        )
    await check_schema(body.schema_, settings, cache)


async def _take(job: Job, actor: Actor, body: JobRegisterRequest, access: JobAccess) -> bool:
    """Re-register an existing job for ``actor``: True when a deleted one was reactivated.

    An active job answers a different schema with :class:`SchemaConflict` first, then
    needs ``access`` to let the caller serve it (:class:`Forbidden`). A deleted job is
    checked the same way before it is reactivated, except one without an owner: nobody
    serves it, so the caller adopts it.
    """
    if not job.deleted:
        if job.schema_ != body.schema_:
            raise SchemaConflict(
                f"Job '{job.full_name}' is registered with a different schema; unregister its "
                "workers first or use another name."
            )
        await check_serve(access, actor, job)
        return False
    if job.owner_id is None:
        job.owner_id = actor.id
    else:
        await check_serve(access, actor, job)
    job.deleted = False
    job.schema_ = body.schema_
    return True


async def _worker_for(
    uow: UnitOfWork, actor: Actor, worker_id: uuid.UUID | None, settings: JobLibSettings
) -> Worker:
    if worker_id is None:
        await check_worker_quota(uow.session, actor, settings)
        worker = Worker(user_id=actor.id)
        uow.session.add(worker)
        await uow.session.flush()
        return worker
    found = await uow.session.get(Worker, worker_id)
    if found is None or found.user_id != actor.id:
        raise WorkerNotFound(f"Worker {worker_id} not found.")
    return found


async def register_job(
    uow: UnitOfWork,
    actor: Actor,
    room_id: str,
    body: JobRegisterRequest,
    settings: JobLibSettings,
    access: JobAccess,
) -> tuple[JobResponse, bool]:
    """Register a job (or re-register it) and link the caller's worker to it.

    The first registrant becomes the job's owner; linking a worker to an existing job needs
    ``access`` to allow the caller to serve it (:class:`Forbidden` otherwise).

    Returns:
        The job and whether it was created or reactivated (201) rather than found (200).
    """
    session = uow.session
    await check_registration(actor, room_id, body, settings, caches_of(session).schemas)
    if room_id == INTERNAL_ROOM:  # only linked: the host registered it
        job, created = await check_internal_link(session, actor, body, settings), False
    else:
        job, created = await find_or_insert(
            session,
            lambda: session.scalar(job_named(room_id, body.category, body.name).with_for_update()),
            lambda: Job(
                room_id=room_id,
                category=body.category,
                name=body.name,
                schema_=body.schema_,
                owner_id=actor.id,
            ),
        )
        if not created:
            created = await _take(job, actor, body, access)
    worker = await _worker_for(uow, actor, body.worker_id, settings)
    linked = await session.get(WorkerJobLink, (worker.id, job.id))
    if linked is None:
        session.add(WorkerJobLink(worker_id=worker.id, job_id=job.id))
        uow.wake_all(f"worker:{worker.id}")  # a waiting claim of this worker: new job
    await session.flush()
    remember_name(session, job.id, job.room_id, job.category, job.name)
    uow.events.append(JobsChanged(room_id=room_id))
    serving = (await workers_of(session, [job.id], settings))[job.id]
    return job_response(job, serving, worker.id), created


@dataclass(frozen=True, slots=True)
class ActiveJob:
    """The columns of an active job that submits and job reads need (no ORM object)."""

    id: uuid.UUID
    room_id: str
    category: str
    name: str
    schema_: dict[str, Any]
    updated_at: datetime | None
    """The row's last change: an insert made against this view checks it still holds."""

    @property
    def full_name(self) -> str:
        """``{room_id}:{category}:{name}``."""
        return build_job_name(self.room_id, self.category, self.name)


@dataclass(frozen=True, slots=True)
class Serving:
    """The workers linked to a job (by id) and how many of them are live."""

    workers: list[uuid.UUID]
    live: int


def job_response(
    job: Job | ActiveJob, serving: Serving, worker_id: uuid.UUID | None = None
) -> JobResponse:
    """Serialise a job row."""
    return JobResponse(schema=job.schema_, worker_id=worker_id, **_summary(job, serving))


def _summary(job: Job | ActiveJob, serving: Serving) -> dict[str, Any]:
    """The fields that name a job in its answers, and its workers (a :class:`JobSummary`)."""
    names = ("id", "room_id", "category", "name", "full_name")
    fields = {field: getattr(job, field) for field in names}
    return fields | {"workers": serving.workers, "live_workers": serving.live}


async def workers_of(
    session: AsyncSession, job_ids: list[uuid.UUID], settings: JobLibSettings
) -> dict[uuid.UUID, Serving]:
    """The workers linked to each job and how many are live, in one query."""
    workers: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    live: dict[uuid.UUID, int] = defaultdict(int)
    if job_ids:
        rows = await session.execute(
            select(
                WorkerJobLink.job_id,
                WorkerJobLink.worker_id,
                worker_is_live(settings, utcnow()).label("live"),
            )
            .join(Worker, Worker.id == WorkerJobLink.worker_id)
            .where(WorkerJobLink.job_id.in_(job_ids))
            .order_by(WorkerJobLink.worker_id)
        )
        for job_id, worker_id, is_live in rows:
            workers[job_id].append(worker_id)
            live[job_id] += bool(is_live)
    return {jid: Serving(workers.get(jid, []), live.get(jid, 0)) for jid in job_ids}


_JOBS = Job.__table__
_ACTIVE_JOB = prebuilt(
    select(
        _JOBS.c.id,
        _JOBS.c.room_id,
        _JOBS.c.category,
        _JOBS.c.name,
        _JOBS.c.schema,
        _JOBS.c.updated_at,
    ).where(
        _JOBS.c.room_id == bindparam("room_id"),
        _JOBS.c.category == bindparam("category"),
        _JOBS.c.name == bindparam("name"),
        _JOBS.c.deleted.is_(False),
    )
)
"""The active job of a name, built once (the hot path of every submit)."""

_JOBS_CACHED_BYTES = 8_388_608
"""Budget of the jobs a queue keeps looked up, in bytes of their schemas' JSON."""


async def resolve_job(
    session: AsyncSession, room_id: str, job_name: str, *, cached: bool = False
) -> ActiveJob:
    """Find the active job ``job_name`` as seen from ``room_id``.

    A room sees its own jobs and ``@global`` ones; anything else is :class:`JobNotFound`.
    ``cached``: the job as this queue last looked it up, where it did; the caller then
    writes only on condition that the job is unchanged (see ``storage.positions``) and
    :func:`forget_job` it otherwise.
    """
    validate_room(room_id)
    parts = parse_job_name(job_name)
    if parts is None:
        raise JobNotFound(f"Job '{job_name}' not found: expected 'room:category:name'.")
    if parts.room_id not in visible_rooms(room_id):
        raise JobNotFound(f"Job '{job_name}' not found in room '{room_id}'.")
    jobs = caches_of(session).jobs
    if cached and (known := jobs.get(job_name)) is not None:
        return known  # type: ignore[no-any-return]
    params = {"room_id": parts.room_id, "category": parts.category, "name": parts.name}
    row = (await execute(session, _ACTIVE_JOB, params)).first()
    if row is None:
        raise JobNotFound(f"Job '{job_name}' not found.")
    job = ActiveJob(row.id, row.room_id, row.category, row.name, row.schema, row.updated_at)
    remember_name(session, job.id, job.room_id, job.category, job.name)
    if cached:  # costed as its schema's compact JSON, at most _JOBS_CACHED_BYTES in all
        cost = len(json.dumps(job.schema_, separators=(",", ":"))) + 256
        jobs.put(job_name, job, cost, _JOBS_CACHED_BYTES)
    return job


def forget_job(session: AsyncSession, job: ActiveJob) -> None:
    """Drop ``job`` from the queue's look-ups (it was found changed)."""
    caches_of(session).jobs.pop(job.full_name)


async def get_job(
    session: AsyncSession, room_id: str, job_name: str, settings: JobLibSettings
) -> JobResponse:
    """The job ``job_name`` as seen from ``room_id``."""
    job = await resolve_job(session, room_id, job_name)
    serving = (await workers_of(session, [job.id], settings))[job.id]
    return job_response(job, serving)


async def list_jobs(
    session: AsyncSession,
    room_id: str,
    limit: int,
    offset: int,
    settings: JobLibSettings,
    live: bool | None = None,
) -> Page[JobSummary]:
    """The active jobs visible from ``room_id``, newest first.

    ``live``: only the jobs that a live worker serves (True) or that none does (False).
    """
    validate_room(room_id)
    where: list[ColumnElement[bool]] = [
        Job.room_id.in_(visible_rooms(room_id)),
        Job.deleted.is_(False),
    ]
    if live is not None:
        served = has_live_worker(settings, utcnow())
        where.append(served if live else ~served)
    total = await count_rows(session, Job, where)
    jobs: list[Any] = []
    if limit:
        page = page_of(select(Job).where(*where), Job, limit, offset)
        jobs = list((await session.execute(page)).scalars())
    serving = await workers_of(session, [j.id for j in jobs], settings)
    items = [JobSummary(**_summary(j, serving[j.id])) for j in jobs]
    return Page[JobSummary](items=items, total=total, limit=limit, offset=offset)


async def soft_delete_orphans(uow: UnitOfWork, job_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Soft-delete those of ``job_ids`` that have no workers and no unfinished tasks.

    ``@internal`` jobs are never deleted: the host registered them, not a worker.

    Returns:
        The ids of the jobs that were deleted now.
    """
    if not job_ids:
        return []
    has_worker = select(WorkerJobLink.job_id).where(WorkerJobLink.job_id == Job.id).exists()
    unfinished = [TaskStatus.PENDING, TaskStatus.CLAIMED, TaskStatus.RUNNING]
    has_task = select(Task.id).where(Task.job_id == Job.id, Task.status.in_(unfinished)).exists()
    result = await uow.session.execute(
        update(Job)
        .where(
            Job.id.in_(job_ids),
            Job.deleted.is_(False),
            Job.room_id != INTERNAL_ROOM,
            ~has_worker,
            ~has_task,
        )
        .values(deleted=True, updated_at=utcnow())
        .returning(Job.id, Job.room_id)
        .execution_options(synchronize_session=False)
    )
    rows = result.all()
    uow.events.extend(JobsChanged(room_id=room) for _, room in rows)
    return [job_id for job_id, _ in rows]


async def unlink_worker(uow: UnitOfWork, worker_id: uuid.UUID) -> list[uuid.UUID]:
    """Remove a worker's job links; return the ids of the jobs it served."""
    links = delete(WorkerJobLink).where(WorkerJobLink.worker_id == worker_id)
    return list(await uow.session.scalars(links.returning(WorkerJobLink.job_id)))
