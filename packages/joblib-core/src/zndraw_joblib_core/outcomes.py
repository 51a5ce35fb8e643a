"""Exceptions a job's ``run()`` raises to steer its task's outcome (client and server alike)."""

from __future__ import annotations

__all__ = ["Retry", "TaskCancelled"]


class Retry(Exception):
    """Raised by an extension's ``run`` to ask that the task be tried again later.

    The worker reports the task ``failed`` with ``retry: true``; the server requeues it with
    backoff while attempts remain, else it stays failed.

    Example:
        >>> raise Retry("GPU busy")  # doctest: +SKIP
    """


class TaskCancelled(Exception):
    """Raised inside a running task to acknowledge that its cancellation was requested.

    ``check_cancelled()`` of a claimed task raises it; the worker then reports the task
    ``cancelled``.
    """
