"""Wire models of per-task credentials (``POST /tasks/{id}/token``)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from zndraw_joblib_core._base import RequestModel, ResponseModel

__all__ = ["TaskTokenRequest", "TaskTokenResponse"]


class TaskTokenRequest(RequestModel):
    """Body of ``POST /tasks/{id}/token``: a worker holding the task asks for its token.

    Attributes:
        worker_id: The caller's worker that holds the task's lease.
        identity: Whose rights the token carries: ``submitter`` (the user who submitted the
            task; ``@internal`` jobs only, whose workers the host trusts) or ``worker`` (the
            account that owns the worker).
    """

    worker_id: UUID
    identity: Literal["submitter", "worker"] = "submitter"


class TaskTokenResponse(ResponseModel):
    """Answer of ``POST /tasks/{id}/token``.

    Attributes:
        access_token: A bearer token valid only while the task holds its lease under this
            claim (refused with 401 once it completes, fails, is cancelled or released).
        token_type: Always ``bearer``.
        task_id: The task it belongs to.
        user_id: The user whose rights it carries.
    """

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    task_id: UUID
    user_id: UUID
