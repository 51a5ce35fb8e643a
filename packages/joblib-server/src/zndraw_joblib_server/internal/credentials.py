"""The FastAPI dependency a host's routes use to accept per-task tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from zndraw_auth.users import bearer_transport

from zndraw_joblib_server.task_tokens import TaskCredential, verify_task_token

__all__ = ["TaskCredentialDep", "task_credential"]


async def task_credential(
    request: Request,
    token: Annotated[str | None, Depends(bearer_transport.scheme)],
) -> TaskCredential:
    """The per-task token of the request, checked against its task's lease (401 otherwise).

    Use it on host routes that the code of ``@internal`` tasks calls back::

        @app.post("/rooms/{room_id}/edit")
        async def edit(room_id: str, cred: TaskCredentialDep): ...

    It accepts only per-task tokens, and only while their task is claimed or running under
    the claim the token was minted for, with an unexpired lease: a task that completed,
    failed, was cancelled, timed out or lost its lease makes its token answer 401. The
    credential names the task, its room and the user whose rights it carries.
    """
    state = request.app.state
    return await verify_task_token(token, state.auth_settings, state.session_maker)


TaskCredentialDep = Annotated[TaskCredential, Depends(task_credential)]
"""The request's valid per-task credential, injected."""
