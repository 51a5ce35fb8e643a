"""``ClaimedTask``: a task a worker holds, with its typed extension instance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from zndraw_joblib_client.errors import UnknownJob
from zndraw_joblib_core import TaskResponse
from zndraw_joblib_core.held import HeldTask

__all__ = ["ClaimedTask", "TaskUpdater"]

# Bound to BaseModel, not Extension: the extension module builds on this one, not back.
E = TypeVar("E", bound=BaseModel)


class TaskUpdater(Protocol):
    """What a :class:`ClaimedTask` reports progress through (a ``JobManager`` is one)."""

    def update_task(
        self,
        task_id: UUID | str,
        *,
        progress: float | None = ...,
        message: str | None = ...,
        worker_id: UUID | None = ...,
    ) -> TaskResponse:
        """Send a progress update of a task and return the task after it."""
        ...


class ClaimedTask(HeldTask, Generic[E]):
    """A task claimed by this client's worker.

    Args:
        task: The task as the server answered the claim.
        manager: Where progress is reported (the ``JobManager``).
        worker_id: The worker holding the task.
        extension_cls: The registered extension class of the task's job, if any.
        run_kwargs: The keyword arguments registered with the job.

    Attributes:
        task: The task as the server answered it (updated by :meth:`progress`).
        worker_id: The worker holding the task; sent with every update.
    """

    def __init__(
        self,
        task: TaskResponse,
        *,
        manager: TaskUpdater,
        worker_id: UUID,
        extension_cls: type[E] | None,
        run_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(task)
        self.worker_id = worker_id
        self._manager = manager
        self._extension_cls = extension_cls
        self._extension: E | None = None
        self._run_kwargs = dict(run_kwargs or {})

    def __repr__(self) -> str:
        return f"ClaimedTask(task_id={self.task_id!s}, job_name={self.job_name!r})"

    @property
    def run_kwargs(self) -> dict[str, Any]:
        """The keyword arguments registered with the job (``register(..., run_kwargs=)``).

        The worker passes them to ``run``; an ``execute`` callable passes them itself.
        """
        return self._run_kwargs

    @property
    def extension(self) -> E:
        """The payload validated into the registered extension class.

        Raises:
            UnknownJob: This client has not registered the task's job.
            pydantic.ValidationError: The payload does not fit the class.
        """
        if self._extension is None:
            if self._extension_cls is None:
                raise UnknownJob(f"job {self.job_name!r} is not registered with this client")
            self._extension = self._extension_cls.model_validate(self.task.payload)
        return self._extension

    def extension_error(self) -> str | None:
        """Return why :attr:`extension` cannot be built, or None when it can."""
        try:
            self.extension  # noqa: B018 - builds and caches the instance
        except (UnknownJob, ValidationError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def token(self, identity: str = "submitter") -> str:
        """A bearer token scoped to this task, valid while this worker holds its lease.

        For ``@internal`` jobs it carries the submitting user's rights by default (the
        server refuses that for other jobs; ask for ``identity="worker"`` there). Use it to
        call back into the host's API on the task's behalf.
        """
        issue = getattr(self._manager, "task_token", None)
        if issue is None:
            raise TypeError("this task's manager cannot issue task tokens")
        return str(issue(self.task_id, worker_id=self.worker_id, identity=identity))

    def progress(self, fraction: float | None, message: str | None = None) -> TaskResponse:
        """Report progress of the running task.

        Args:
            fraction: Progress between 0 and 1, or None to send only a message.
            message: A short status message.

        Returns:
            The task after the update; its ``cancel_requested`` is also reflected in
            :attr:`cancel_requested`.

        Raises:
            LeaseLost: This worker no longer holds the task; stop working on it.
        """
        task = self._manager.update_task(
            self.task_id, progress=fraction, message=message, worker_id=self.worker_id
        )
        self.task = task
        if task.cancel_requested:
            self._cancel.set()
        return task
