"""The claim statement: ``UPDATE ... WHERE id IN (claimable CTE) RETURNING``; a worker's beat.

The CTE selects ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so concurrent claims in any number
of processes take different rows without waiting or retrying; on SQLite the statement runs
inside the process's write gate, which serialises it. The statements both stores use to
beat a worker and to check that it is the caller's live here too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, bindparam, exists, select, update

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.models import Worker, WorkerJobLink, status_is
from zndraw_joblib_server.storage.prebuilt import BY_WORKER, prebuilt
from zndraw_joblib_server.storage.records import TASKS, task_param
from zndraw_joblib_server.storage.rules_sql import claim_order_by
from zndraw_joblib_server.storage.store import Store

__all__ = ["LINKS", "TOUCH", "WORKERS", "callers_worker", "claim_statement", "job_params"]

WORKERS = Worker.__table__
LINKS = WorkerJobLink.__table__

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


def _only_job(owned: bool) -> Any:
    """SQL: the id of the worker's (``b_worker``) job if it serves exactly one, else NULL.

    ``owned``: and only if the worker is the caller's (where no beat in the statement checks).
    """
    other = LINKS.alias("other")
    worker = task_param("b_worker", "worker_id")
    alone = (
        ~select(other.c.job_id)
        .where(other.c.worker_id == worker, other.c.job_id != LINKS.c.job_id)
        .exists()
    )
    conditions = [LINKS.c.worker_id == worker, alone, *([callers_worker(worker)] if owned else [])]
    return select(LINKS.c.job_id).where(*conditions).limit(1).scalar_subquery()


@lru_cache(maxsize=32)
def claim_statement(
    store: Store, several_jobs: bool, guarded: bool, alone: bool = False, start: bool = False
) -> Any:
    """The claim, built once per shape; parameters: job id(s), now, lease end, worker, limit.

    One job (the usual case) is an equality, so both databases walk the claim index in
    claim order and stop after ``limit`` rows, however long the queue.

    ``guarded`` (a claim outside a transaction): the statement also
    refreshes the heartbeat of the worker (parameter ``b_beat``) if it belongs to the caller
    (``b_user``), and claims only if that found the worker. The update locks the worker's
    row until the statement commits, so a concurrent ``DELETE /workers`` (which locks that
    row first) either makes it claim nothing or waits for it and then releases what it
    claimed.

    ``alone``: the statement looks the worker's job up itself and claims only when the
    worker serves exactly one and is the caller's (no ``b_job_id``; ``b_user``): a whole
    claim in one round trip. Claiming nothing then does not say why; the caller asks
    again the general way.

    ``start``: the claimed tasks are also started (``running``, ``started_at`` the claim's
    time); the caller sets the deadline of tasks with a timeout.
    """
    if alone:
        served = TASKS.c.job_id == _only_job(owned=not guarded)
    elif several_jobs:
        served = TASKS.c.job_id.in_(bindparam("b_job_ids", expanding=True))
    else:
        served = TASKS.c.job_id == task_param("b_job_id", "job_id")
    claimable = (
        select(TASKS.c.id)
        .where(
            status_is(TaskStatus.PENDING),
            served,
            TASKS.c.run_after <= task_param("b_now", "run_after"),
        )
        .order_by(*claim_order_by(TASKS.c))
        .limit(bindparam("b_limit", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("claimable")
    )
    ids = select(claimable.c.id)
    stmt = update(TASKS).where(store.pick_ids(TASKS.c.id, ids))
    if guarded:
        beat = (
            update(WORKERS)
            .where(*callers(task_param("b_worker", "worker_id")))
            .values(last_heartbeat=bindparam("b_beat", type_=WORKERS.c.last_heartbeat.type))
            .returning(WORKERS.c.id)
            .cte("beat")
        )
        stmt = stmt.where(select(beat.c.id).exists())
    values: dict[str, Any] = {
        "status": TaskStatus.RUNNING if start else TaskStatus.CLAIMED,
        "worker_id": task_param("b_worker", "worker_id"),
        "attempt": TASKS.c.attempt + 1,
        "claimed_at": task_param("b_claimed_at", "claimed_at"),
        "lease_expires_at": task_param("b_lease_until", "lease_expires_at"),
        "version": TASKS.c.version + 1,
    }
    if start:
        values["started_at"] = task_param("b_claimed_at", "started_at")
    return prebuilt(stmt.values(values).returning(*TASKS.c), rows_of=BY_WORKER)


def job_params(params: dict[str, Any], job_ids: list[Any]) -> bool:
    """Add the claim's jobs to ``params``; whether there are several (its statement's shape)."""
    if len(job_ids) == 1:
        params["b_job_id"] = job_ids[0]
        return False
    params["b_job_ids"] = job_ids
    return True
