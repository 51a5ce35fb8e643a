"""A worker's usual report on its own task in one statement (PostgreSQL, outside a transaction).

Most ``PATCH /tasks/{id}`` requests are a worker saying it started (``running``) or finished
(``completed``) the task it holds. The general path reads the task, checks it in Python and
writes back what changed: two round trips. Here one ``UPDATE ... RETURNING`` both checks and
writes. Its conditions are the general path's, for the case where everything is in order:
the task is held by the named worker, that worker belongs to the caller, the task is in a
state the transition table lets move to the target, and its lease has not run out. The new
values are those :func:`~zndraw_joblib_server.services.updates._apply` sets, written as SQL.

When the statement changes no row, something is not in order (a lost lease, another user's
worker, a repeated final report...) and the caller takes the general path, which answers
exactly as before; nothing was written.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Float, Interval, bindparam, exists, func, select, update

from zndraw_joblib_core import (
    ACTIVE_STATUSES,
    TaskResponse,
    TaskStatus,
    TaskUpdateRequest,
    can_transition,
)
from zndraw_joblib_server.models import Worker, status_is, utcnow
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.common import announce, to_response
from zndraw_joblib_server.services.rules_sql import lease_held_sql, lease_seconds_sql
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork
from zndraw_joblib_server.storage.caches import caches_of
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import TASKS, fetch, task_param

__all__ = ["REPORTED", "report"]

REPORTED = (TaskStatus.RUNNING, TaskStatus.COMPLETED)
"""The targets reported in one statement."""

_WORKERS = Worker.__table__


def _seconds(value: Any) -> Any:
    """SQL: an interval of ``value`` seconds (a float expression)."""
    return func.make_interval(0, 0, 0, 0, 0, 0, value, type_=Interval)


def _statement(target: TaskStatus) -> Any:
    c = TASKS.c
    now = task_param("b_now", "started_at")
    sources = [s for s in ACTIVE_STATUSES if can_transition(s, target)]
    values: dict[str, Any] = {
        "status": target,
        "version": c.version + 1,
        "progress": func.coalesce(task_param("v_progress", "progress"), c.progress),
        "message": func.coalesce(task_param("v_message", "message"), c.message),
    }
    if target == TaskStatus.RUNNING:
        lease = lease_seconds_sql(c.lease_seconds, bindparam("b_lease", Float))
        values |= {
            "started_at": now,
            "lease_expires_at": now + _seconds(lease),
            "deadline_at": func.coalesce(now + _seconds(c.timeout_seconds), c.deadline_at),
        }
    else:
        values |= {
            "completed_at": now,
            "lease_expires_at": None,
            "deadline_at": None,
            "result": task_param("v_result", "result"),
            "error": func.coalesce(task_param("v_error", "error"), c.error),
        }
    worker = task_param("b_worker", "worker_id")
    owned = exists(
        select(_WORKERS.c.id).where(
            _WORKERS.c.id == worker,
            _WORKERS.c.user_id == bindparam("b_user", type_=_WORKERS.c.user_id.type),
        )
    )
    stmt = (
        update(TASKS)
        .where(
            c.id == task_param("b_id", "id"),
            c.worker_id == worker,
            status_is(*sources),
            lease_held_sql(c.lease_expires_at, now),
            owned,
        )
        .values(values)
        .returning(*c)
    )
    return prebuilt(stmt)


_STATEMENTS = {target: _statement(target) for target in REPORTED}


async def report(
    uow: UnitOfWork,
    actor: Actor,
    task_id: uuid.UUID,
    body: TaskUpdateRequest,
    settings: JobLibSettings,
) -> TaskResponse | None:
    """Apply a worker's ``running`` or ``completed`` report in one statement.

    Only for bodies the general path would accept as they are (the caller checked their
    limits) with ``worker_id`` set and ``status`` in :data:`REPORTED`.

    Returns:
        The task after the report, or None when nothing was written (take the general
        path: it finds out why and answers as always).
    """
    if body.worker_id is None or body.status not in REPORTED:
        return None
    now = utcnow()
    params: dict[str, Any] = {
        "b_id": task_id,
        "b_worker": body.worker_id,
        "b_user": actor.id,
        "b_now": now,
        "v_progress": body.progress,
        "v_message": body.message,
    }
    if body.status == TaskStatus.RUNNING:
        params["b_lease"] = float(settings.lease_seconds)
    else:
        params["v_result"] = body.result
        params["v_error"] = body.error
    tasks = await fetch(uow.session, _STATEMENTS[body.status], params)
    if not tasks:
        return None
    names = await announce(uow, tasks, now)
    logged = caches_of(uow.session).unrenderable
    return to_response(tasks[0], names[tasks[0].job_id], logged=logged)
