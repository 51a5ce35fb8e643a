"""Issuing per-task tokens to the worker that holds a task (see :mod:`..task_tokens`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    ACTIVE_STATUSES,
    INTERNAL_ROOM,
    Forbidden,
    LeaseLost,
    TaskNotFound,
    TaskTokenRequest,
    TaskTokenResponse,
)
from zndraw_joblib_server.domain.rules import lease_expired
from zndraw_joblib_server.models import utcnow
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.workers import owned_worker
from zndraw_joblib_server.task_tokens import lease_row, mint_task_token

__all__ = ["issue_task_token"]


async def issue_task_token(
    session: AsyncSession,
    actor: Actor,
    task_id: uuid.UUID,
    body: TaskTokenRequest,
    auth_settings: Any,
) -> TaskTokenResponse:
    """A token for ``task_id``, to the caller whose worker holds its lease.

    Raises:
        WorkerNotFound: No such worker.
        Forbidden: The worker is somebody else's, or a submitter's token was asked for a
            task of a job that is not ``@internal``.
        TaskNotFound: No such task.
        LeaseLost: The worker does not hold the task now (or its lease ran out).
    """
    worker = await owned_worker(session, actor, body.worker_id, allow_superuser=False)
    row = await lease_row(session, task_id)
    if row is None:
        raise TaskNotFound(f"Task {task_id} not found.")
    if (
        row.worker_id != worker.id
        or row.status not in ACTIVE_STATUSES
        or lease_expired(row.lease_expires_at, utcnow())
    ):
        raise LeaseLost(f"Worker {worker.id} does not hold task {task_id}.")
    user_id = worker.user_id
    if body.identity == "submitter":
        if row.job_room != INTERNAL_ROOM:
            raise Forbidden(
                "A token with the submitter's rights is only issued for @internal jobs; "
                "ask for identity 'worker'."
            )
        if row.created_by_id is None:
            raise Forbidden(f"Task {task_id} has no submitter any more (the user was deleted).")
        user_id = row.created_by_id
    token = mint_task_token(
        auth_settings, task_id=task_id, worker_id=worker.id, attempt=row.attempt, user_id=user_id
    )
    return TaskTokenResponse(access_token=token, task_id=task_id, user_id=user_id)
