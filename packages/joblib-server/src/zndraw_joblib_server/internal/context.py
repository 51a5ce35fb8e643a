"""The ``task`` an internal extension's ``run(task, **kwargs)`` receives in the server."""

from __future__ import annotations

import asyncio
import uuid

from zndraw_joblib_core import TaskResponse
from zndraw_joblib_core.held import HeldTask
from zndraw_joblib_server.internal.runtime import InternalRuntime

__all__ = ["InternalTask"]


class InternalTask(HeldTask):
    """A claimed ``@internal`` task, as its ``run`` sees it.

    Shaped like the client's ``ClaimedTask`` (``task_id``, ``room_id``, ``payload``,
    ``cancel_requested``, ``check_cancelled()``, ``progress()``), so one extension class runs
    in the server and in ``zndraw-joblib worker --internal``.

    Attributes:
        task: The task as claimed and started.
        worker_id: The executor's worker holding the task.
    """

    def __init__(
        self,
        task: TaskResponse,
        runtime: InternalRuntime,
        worker_id: uuid.UUID,
        loop: asyncio.AbstractEventLoop,
        token: str | None,
    ) -> None:
        super().__init__(task)
        self.worker_id = worker_id
        self._token = token
        self._runtime = runtime
        self._loop = loop

    def use_token(self, token: str | None) -> None:
        """Set the task's token (the executor does, once the task runs)."""
        self._token = token

    def token(self) -> str:
        """The per-task bearer token (as the client's ``ClaimedTask.token()``).

        Valid for the queue's API and the host's routes (``task_credential``) only while
        this task holds its lease; it carries the rights the executor was configured with
        (the submitter's by default).

        Raises:
            RuntimeError: The app has no zndraw-auth settings to sign tokens with.
        """
        if self._token is None:
            raise RuntimeError("no task token: the app has no zndraw-auth settings")
        return self._token

    async def aprogress(self, fraction: float | None, message: str | None = None) -> TaskResponse:
        """Report progress from an ``async`` run."""
        self.task = await self._runtime.update(
            self.worker_id, self.task_id, progress=fraction, message=message
        )
        return self.task

    def progress(self, fraction: float | None, message: str | None = None) -> TaskResponse:
        """Report progress from a synchronous run (it runs in a thread of the executor)."""
        future = asyncio.run_coroutine_threadsafe(self.aprogress(fraction, message), self._loop)
        return future.result()
