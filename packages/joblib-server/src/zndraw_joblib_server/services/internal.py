"""The rules of ``@internal`` jobs: who may serve them, when a submit is refused, upserts.

``@internal`` jobs are registered by the host in code (:class:`~zndraw_joblib_server.JobQueue`
``internal=[...]``), never over HTTP. A worker serves one like any job, through a link made
by ``PUT /rooms/@internal/jobs``; that link is refused (403) unless the caller may serve
internal jobs (a superuser, or an account named in ``internal_worker_emails``), and it never
creates or changes the job. The in-process executor links its worker the same way, without
HTTP.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    INTERNAL_ROOM,
    Forbidden,
    InternalJobNotConfigured,
    JobNotFound,
    JobRegisterRequest,
    JobsChanged,
    SchemaConflict,
)
from zndraw_joblib_server.models import Job, Worker, WorkerJobLink
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.common import job_named
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork

__all__ = [
    "InternalJobSpec",
    "check_internal_link",
    "check_serves_internal",
    "create_internal_worker",
    "ensure_internal_jobs",
    "may_serve_internal",
    "require_executor",
]

_LOCK_KEY = zlib.crc32(b"zndraw-joblib:internal-jobs")
"""The PostgreSQL advisory lock taken while the internal jobs are written at start-up."""


@dataclass(frozen=True)
class InternalJobSpec:
    """What the queue stores of one ``@internal`` job."""

    category: str
    name: str
    schema: dict[str, Any]

    @property
    def full_name(self) -> str:
        """``@internal:{category}:{name}``."""
        return f"{INTERNAL_ROOM}:{self.category}:{self.name}"


def may_serve_internal(actor: Actor, settings: JobLibSettings) -> bool:
    """Whether ``actor``'s workers may serve ``@internal`` jobs.

    Superusers may; so may the accounts whose e-mail is listed in
    ``settings.internal_worker_emails`` (compared case-insensitively).
    """
    if actor.is_superuser:
        return True
    email = getattr(actor.user, "email", None)
    allowed = {e.lower() for e in settings.internal_worker_emails}
    return isinstance(email, str) and email.lower() in allowed


def check_serves_internal(actor: Actor, settings: JobLibSettings) -> None:
    """Raise :class:`Forbidden` unless ``actor`` may serve ``@internal`` jobs."""
    if not may_serve_internal(actor, settings):
        raise Forbidden(
            "@internal jobs are registered by the host; only a superuser or an internal "
            "worker account (internal_worker_emails) may serve them."
        )


async def check_internal_link(
    session: AsyncSession, actor: Actor, body: JobRegisterRequest, settings: JobLibSettings
) -> Job:
    """The ``@internal`` job a worker asks to serve (``PUT /rooms/@internal/jobs``).

    Raises:
        Forbidden: The caller may not serve internal jobs, or the host registered no such
            job (nobody registers ``@internal`` jobs over HTTP).
        SchemaConflict: The worker's class has another schema than the host's.
    """
    check_serves_internal(actor, settings)
    named = job_named(INTERNAL_ROOM, body.category, body.name)
    stmt = named.where(Job.deleted.is_(False)).with_for_update()
    job = (await session.execute(stmt)).scalar_one_or_none()
    if job is None:
        raise Forbidden(
            f"The host registered no job '{INTERNAL_ROOM}:{body.category}:{body.name}': "
            "@internal jobs cannot be registered over HTTP."
        )
    if job.schema_ != body.schema_:
        raise SchemaConflict(
            f"Job '{job.full_name}' has another schema on the server; serve the host's "
            "version of the extension."
        )
    return job


async def require_executor(session: AsyncSession, job_id: uuid.UUID, full_name: str) -> None:
    """Refuse a submit to an ``@internal`` job that no worker serves now.

    The rule: at least one worker (the in-process executor's or an internal worker's) is
    linked to the job. Tasks already queued stay pending and run once one is linked again.

    Raises:
        InternalJobNotConfigured: No worker is linked to the job (503).
    """
    linked = (
        await session.execute(
            select(WorkerJobLink.worker_id).where(WorkerJobLink.job_id == job_id).limit(1)
        )
    ).first()
    if linked is None:
        raise InternalJobNotConfigured(
            f"No executor serves '{full_name}': the host runs no in-process executor for it "
            "and no internal worker is connected. Try again later.",
            headers={"Retry-After": "5"},
        )


async def ensure_internal_jobs(uow: UnitOfWork, specs: list[InternalJobSpec]) -> list[Job]:
    """Create or update the ``@internal`` jobs, under a lock; idempotent.

    The host's code is the truth: an existing job takes the given schema (and is reactivated
    if it was deleted). Several processes starting together write one after the other.

    Returns:
        The jobs, in the order of ``specs``.
    """
    await uow.store.lock_exclusive(uow.session, _LOCK_KEY)
    session = uow.session
    jobs: list[Job] = []
    changed = False
    for spec in specs:
        named = job_named(INTERNAL_ROOM, spec.category, spec.name)
        job = (await session.execute(named)).scalar_one_or_none()
        if job is None:
            job = Job(
                room_id=INTERNAL_ROOM, category=spec.category, name=spec.name, schema_=spec.schema
            )
            try:
                async with session.begin_nested():
                    session.add(job)
                    await session.flush()
            except IntegrityError:  # pragma: no cover - a writer without the lock
                raise JobNotFound(f"Job '{spec.full_name}' was created concurrently.") from None
            changed = True
        elif job.deleted or job.schema_ != spec.schema:
            job.deleted = False
            job.schema_ = spec.schema
            changed = True
        jobs.append(job)
    await session.flush()
    if changed:
        uow.events.append(JobsChanged(room_id=INTERNAL_ROOM))
    return jobs


async def create_internal_worker(
    uow: UnitOfWork, user_id: uuid.UUID, full_names: list[tuple[str, str]]
) -> uuid.UUID:
    """Create a worker of ``user_id`` linked to the ``@internal`` jobs ``(category, name)``.

    The in-process executor's worker: a worker row like any other (heartbeats, leases, the
    sweeper and metrics treat it alike), made without HTTP and without the worker quota.
    """
    session = uow.session
    worker = Worker(user_id=user_id)
    session.add(worker)
    await session.flush()
    for category, name in full_names:
        named = job_named(INTERNAL_ROOM, category, name).where(Job.deleted.is_(False))
        job_id = (await session.execute(named.with_only_columns(Job.id))).scalar()
        if job_id is not None:
            session.add(WorkerJobLink(worker_id=worker.id, job_id=job_id))
    await session.flush()
    uow.wake_all(f"worker:{worker.id}")
    uow.events.append(JobsChanged(room_id=INTERNAL_ROOM))
    return worker.id
