"""Per-user caps on workers and pending tasks.

The settings are ``max_workers_per_user`` and ``max_pending_tasks_per_user``.
Each check is one count over an index of the user's rows, bounded by the cap (it stops
counting at the cap), so it costs little for ordinary users and never grows with the table.
Superusers are exempt. The counts are read, not locked: concurrent requests of one user may
overshoot a cap by the number of requests in flight, never more.
"""

from __future__ import annotations

from sqlalchemy import Integer, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import QuotaExceeded, TaskStatus
from zndraw_joblib_server.models import Task, Worker, status_is
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.prebuilt import prebuilt

__all__ = ["check_pending_quota", "check_worker_quota"]

_WORKERS = Worker.__table__
_TASKS = Task.__table__


def _bounded_count(table: object, *where: object) -> object:
    """SQL: ``count(*)`` of at most ``:cap`` matching rows (stops at the cap)."""
    cap = bindparam("cap", type_=Integer)
    rows = select(1).select_from(table).where(*where).limit(cap).subquery()  # type: ignore[arg-type]
    return prebuilt(select(func.count()).select_from(rows))


_USER_WORKERS = _bounded_count(
    _WORKERS, _WORKERS.c.user_id == bindparam("user_id", type_=_WORKERS.c.user_id.type)
)
_USER_PENDING = _bounded_count(
    _TASKS,
    _TASKS.c.created_by_id == bindparam("user_id", type_=_TASKS.c.created_by_id.type),
    status_is(TaskStatus.PENDING),
)


async def check_worker_quota(
    session: AsyncSession, actor: Actor, settings: JobLibSettings
) -> None:
    """Raise :class:`QuotaExceeded` when ``actor`` already has the most workers allowed."""
    cap = settings.max_workers_per_user
    if not cap or actor.is_superuser:
        return
    count = (await execute(session, _USER_WORKERS, {"user_id": actor.id, "cap": cap})).scalar()
    if (count or 0) >= cap:
        raise QuotaExceeded(
            f"You have {cap} workers, the most one user may have; remove some "
            "(DELETE /workers/{id}) or wait for idle ones to time out.",
            limit=cap,
        )


async def check_pending_quota(
    session: AsyncSession, actor: Actor, adding: int, settings: JobLibSettings
) -> None:
    """Raise :class:`QuotaExceeded` when ``adding`` more pending tasks would pass the cap."""
    cap = settings.max_pending_tasks_per_user
    if not cap or actor.is_superuser:
        return
    if adding > cap:
        raise QuotaExceeded(
            f"A user may have at most {cap} pending tasks; this submit adds {adding}.",
            limit=cap,
        )
    params = {"user_id": actor.id, "cap": cap - adding + 1}
    count = (await execute(session, _USER_PENDING, params)).scalar() or 0
    if count + adding > cap:
        raise QuotaExceeded(
            f"You have {count} pending tasks; a user may have at most {cap}. Wait until "
            "some are claimed (or cancel some), then submit again.",
            limit=cap,
        )
