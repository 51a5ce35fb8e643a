"""Per-task credential route: a worker holding a task asks for the task's own token."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from zndraw_joblib_core import TaskTokenRequest, TaskTokenResponse
from zndraw_joblib_server.dependencies import ActorDep, DatabaseDep
from zndraw_joblib_server.routes._common import JobLibRoute, problems
from zndraw_joblib_server.services import credentials as credential_service

router = APIRouter(route_class=JobLibRoute, tags=["tasks"], redirect_slashes=False)


@router.post(
    "/tasks/{task_id}/token",
    responses=problems(403, 404, 409),
)
async def task_token(
    task_id: uuid.UUID,
    body: TaskTokenRequest,
    request: Request,
    actor: ActorDep,
    db: DatabaseDep,
) -> TaskTokenResponse:
    """A bearer token scoped to one task, for the worker that holds it.

    The token is accepted by the queue (and by host routes using
    `zndraw_joblib_server.internal.task_credential`) only while the task is claimed or
    running under this claim with an unexpired lease; afterwards it answers 401. With
    `identity: submitter` (`@internal` jobs only) it carries the submitting user's rights,
    with `worker` those of the worker's account. 409 `lease-lost`: the worker does not
    hold the task.
    """
    async with db.read() as session:
        return await credential_service.issue_task_token(
            session, actor, task_id, body, request.app.state.auth_settings
        )
