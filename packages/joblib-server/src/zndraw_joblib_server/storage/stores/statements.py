"""Statements both stores use: a worker's heartbeat and the jobs it serves."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, exists, select, update

from zndraw_joblib_server.models import Worker, WorkerJobLink
from zndraw_joblib_server.storage.prebuilt import prebuilt

__all__ = ["JOBS_OF_WORKER", "LINKS", "TOUCH", "WORKERS", "callers", "callers_worker"]

WORKERS = Worker.__table__
LINKS = WorkerJobLink.__table__

JOBS_OF_WORKER = prebuilt(
    select(LINKS.c.job_id).where(
        LINKS.c.worker_id == bindparam("worker_id", type_=LINKS.c.worker_id.type)
    )
)
"""The ids of the jobs a worker (``worker_id``) serves."""

TOUCH = prebuilt(
    update(WORKERS)
    .where(
        WORKERS.c.id == bindparam("b_worker_id", type_=WORKERS.c.id.type),
        WORKERS.c.user_id == bindparam("b_user_id", type_=WORKERS.c.user_id.type),
    )
    .values(last_heartbeat=bindparam("b_now", type_=WORKERS.c.last_heartbeat.type))
    .returning(WORKERS.c.id)
)
"""Beat a worker if it is the caller's (``b_worker_id``, ``b_user_id``, ``b_now``)."""


def callers(worker: Any) -> tuple[Any, ...]:
    """SQL conditions on ``joblib_worker``: its row is ``worker``, the caller's (``b_user``)."""
    return (
        WORKERS.c.id == worker,
        WORKERS.c.user_id == bindparam("b_user", type_=WORKERS.c.user_id.type),
    )


def callers_worker(worker: Any) -> Any:
    """SQL: the worker ``worker`` exists and is the caller's (parameter ``b_user``)."""
    return exists(select(WORKERS.c.id).where(*callers(worker)))
