"""A worker's usual report on its own task, in one statement where the store writes it so.

Most ``PATCH /tasks/{id}`` requests are a worker saying it started (``running``) or finished
(``completed``) the task it holds. The general path (``services.updates``) reads the task,
checks it in Python and writes back what changed: two round trips. A store may instead
check and write in one ``UPDATE ... RETURNING`` (``Store.report``). When it does not, or
the statement changes no row (a lost lease, another user's worker, a repeated final
report...), nothing was written and the caller takes the general path, which answers
exactly as always.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from zndraw_joblib_core import (
    ProblemError,
    RequestValidationFailed,
    TaskClaimRequest,
    TaskResponse,
    TaskStatus,
    TaskUpdateRequest,
)
from zndraw_joblib_server.models import utcnow
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.claim import claim_params, claimed, finds_its_job
from zndraw_joblib_server.services.common import announce, check_size, to_response
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork
from zndraw_joblib_server.storage.caches import caches_of
from zndraw_joblib_server.storage.records import TaskRecord

__all__ = ["check_limits", "report", "report_and_claim"]


def check_limits(body: TaskUpdateRequest, settings: JobLibSettings) -> None:
    """Refuse an update whose result, error or message is out of bounds."""
    if body.result is not None and body.status != TaskStatus.COMPLETED:
        raise RequestValidationFailed("A result is only accepted with status 'completed'.")
    if body.error is not None:
        check_size("error text", body.error, settings.max_error_chars)
    if body.message is not None:
        check_size("message", body.message, settings.max_message_chars)
    if body.result is not None:
        check_size("result", body.result, settings.max_result_bytes, settings.max_json_depth)


def _parameters(
    actor: Actor, task_id: uuid.UUID, body: TaskUpdateRequest, settings: JobLibSettings
) -> dict[str, Any] | None:
    """The one-statement report's parameters; None outside the limits.

    (The general path then answers: its checks come first.)
    """
    try:
        check_limits(body, settings)
    except ProblemError:
        return None
    params: dict[str, Any] = {
        "b_id": task_id,
        "b_worker": body.worker_id,
        "b_user": actor.id,
        "b_now": utcnow(),
        "v_progress": body.progress,
        "v_message": body.message,
    }
    if body.status == TaskStatus.RUNNING:
        params["b_lease"] = float(settings.lease_seconds)
    else:
        params["v_result"] = body.result
        params["v_error"] = body.error
    return params


async def _answer(uow: UnitOfWork, task: TaskRecord, now: datetime) -> TaskResponse:
    names = await announce(uow, [task], now)
    return to_response(task, names[task.job_id], logged=caches_of(uow.session).unrenderable)


async def report(
    uow: UnitOfWork,
    actor: Actor,
    task_id: uuid.UUID,
    body: TaskUpdateRequest,
    settings: JobLibSettings,
) -> TaskResponse | None:
    """Apply a worker's report (``worker_id`` set) in one statement, where the store can.

    Returns:
        The task after the report, or None when nothing was written (take the general
        path: it finds out why and answers as always).
    """
    if body.worker_id is None or body.status is None:
        return None
    params: dict[str, Any] = {}

    def parameters() -> dict[str, Any] | None:
        """Built only where the store tries the statement."""
        params.update(_parameters(actor, task_id, body, settings) or {})
        return params or None

    task = await uow.store.report(uow.session, body.status, parameters)
    return None if task is None else await _answer(uow, task, params["b_now"])


async def report_and_claim(
    uow: UnitOfWork,
    actor: Actor,
    task_id: uuid.UUID,
    body: TaskUpdateRequest,
    claim: TaskClaimRequest,
    settings: JobLibSettings,
) -> tuple[TaskResponse, list[TaskResponse]] | None:
    """A worker's report and its ``claim_next`` in one statement, where the store can.

    Tried when the report names the claiming worker and that worker's hint says its
    claim finds its only job (``services.claim.finds_its_job``).

    Returns:
        The task after the report and the tasks claimed (none: claim the general way);
        None when nothing was written (take the general path for both).
    """
    if body.status is None or body.worker_id != claim.worker_id:
        return None
    if not finds_its_job(uow.session, claim.worker_id):
        return None
    params: dict[str, Any] = {}

    def parameters() -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Built only where the store tries the statement."""
        values = _parameters(actor, task_id, body, settings)
        if values is None:
            return None
        params.update(values)
        return values, claim_params(claim.worker_id, claim.max_tasks, values["b_now"], settings)

    found = await uow.store.report_and_claim(
        uow.session, body.status, parameters, start=claim.start
    )
    task, tasks = found or (None, [])
    if task is None:
        return None
    answer = await _answer(uow, task, params["b_now"])
    return answer, await claimed(uow, tasks, params["b_now"], settings, start=claim.start)
