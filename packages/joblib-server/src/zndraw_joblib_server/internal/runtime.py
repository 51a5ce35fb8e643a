"""The queue's service layer as an executor of ``@internal`` jobs sees it (no HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Literal

from zndraw_joblib_core import TaskResponse, TaskTokenRequest, TaskUpdateRequest, WorkerResponse
from zndraw_joblib_server.services import updates as update_service
from zndraw_joblib_server.services import waiting
from zndraw_joblib_server.services import workers as worker_service
from zndraw_joblib_server.services.access import Actor, AllowAuthenticated
from zndraw_joblib_server.services.credentials import issue_task_token
from zndraw_joblib_server.services.internal import create_internal_worker
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import EventSink
from zndraw_joblib_server.storage.database import Database

__all__ = ["InternalRuntime"]


class InternalRuntime:
    """What an executor uses to serve the host's ``@internal`` jobs through the queue.

    Every call goes through the same services as the HTTP endpoints (claims, updates,
    heartbeats, events), so internal tasks have one lifecycle with every other task: leases,
    retries, timeouts, cancellation and fencing apply unchanged.

    Attributes:
        extensions: The host's internal extension classes by full job name.
        settings: The queue's settings.
        actor: The account the executor's workers belong to (no superuser).
    """

    def __init__(
        self,
        database: Database,
        sink: EventSink | None,
        settings: JobLibSettings,
        extensions: dict[str, type[Any]],
        user_id: uuid.UUID,
        auth_settings: Callable[[], Any],
    ) -> None:
        self._db = database
        self._sink = sink
        self.settings = settings
        self.extensions = extensions
        self.actor = Actor(id=user_id)
        self._auth_settings = auth_settings

    async def register_worker(self) -> uuid.UUID:
        """Create a worker linked to every internal job of :attr:`extensions`."""
        parts = (full_name.split(":") for full_name in self.extensions)
        names = [(category, name) for _, category, name in parts]
        async with self._db.write(self._sink) as uow:
            return await create_internal_worker(uow, self.actor.id, names)

    async def heartbeat(self, worker_id: uuid.UUID) -> WorkerResponse:
        """Keep the worker alive and extend its leases (raises ``WorkerNotFound`` if swept)."""
        async with self._db.write(self._sink) as uow:
            return await worker_service.heartbeat(uow, self.actor, worker_id, self.settings)

    async def claim(
        self, worker_id: uuid.UUID, max_tasks: int, wait: float | None
    ) -> list[TaskResponse]:
        """Claim up to ``max_tasks`` tasks, waiting up to ``wait`` seconds for one."""
        return await waiting.claim(
            self._db, self._sink, self.actor, worker_id, max_tasks, wait, self.settings
        )

    async def update(
        self, worker_id: uuid.UUID, task_id: uuid.UUID, **fields: Any
    ) -> TaskResponse:
        """Report on a task the worker holds (``LeaseLost`` when it no longer does)."""
        body = TaskUpdateRequest(worker_id=worker_id, **fields)
        task, _ = await update_service.update_one(
            self._db, self._sink, self.actor, AllowAuthenticated(), task_id, body, self.settings
        )
        return task

    async def remove_worker(self, worker_id: uuid.UUID) -> None:
        """Remove the worker; its in-flight tasks are released (requeued while attempts remain)."""
        async with self._db.write(self._sink) as uow:
            await worker_service.remove_worker(uow, self.actor, worker_id, self.settings)

    async def task_token(
        self,
        worker_id: uuid.UUID,
        task_id: uuid.UUID,
        identity: Literal["submitter", "worker"] = "submitter",
    ) -> str | None:
        """The per-task token, or None when the app has no zndraw-auth settings to sign it."""
        auth_settings = self._auth_settings()
        if auth_settings is None:
            return None
        body = TaskTokenRequest(worker_id=worker_id, identity=identity)
        async with self._db.read() as session:
            answer = await issue_task_token(session, self.actor, task_id, body, auth_settings)
        return answer.access_token
