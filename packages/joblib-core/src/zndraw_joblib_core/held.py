"""``HeldTask``: what a running job sees of its task, in a client worker and in the server."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from zndraw_joblib_core.outcomes import TaskCancelled
from zndraw_joblib_core.tasks import TaskResponse

__all__ = ["HeldTask"]


class HeldTask:
    """A task held by a worker: its fields, and whether it was asked to stop.

    The base of the client's ``ClaimedTask`` and the server's ``InternalTask``, so one
    extension's ``run(task)`` works under both.

    Attributes:
        task: The task as the server last answered it.
    """

    def __init__(self, task: TaskResponse) -> None:
        self.task = task
        self._cancel = threading.Event()
        if task.cancel_requested:
            self._cancel.set()

    @property
    def task_id(self) -> UUID:
        """The task's id."""
        return self.task.id

    @property
    def job_name(self) -> str:
        """The job's full name ``{room}:{category}:{name}``."""
        return self.task.job_name

    @property
    def room_id(self) -> str:
        """The room the task was submitted from."""
        return self.task.room_id

    @property
    def attempt(self) -> int:
        """Which attempt this is (1 on the first claim)."""
        return self.task.attempt

    @property
    def payload(self) -> dict[str, Any]:
        """The raw task payload."""
        return self.task.payload

    @property
    def cancel_requested(self) -> bool:
        """Whether cancellation of this task was requested (the task should stop)."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` when cancellation was requested.

        Call it at convenient points of a long task; the worker reports ``cancelled``.

        Raises:
            TaskCancelled: Cancellation was requested.
        """
        if self._cancel.is_set():
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def request_cancel(self) -> None:
        """Mark the task as cancel-requested (the worker does this on heartbeat answers)."""
        self._cancel.set()
