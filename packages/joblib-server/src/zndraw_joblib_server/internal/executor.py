"""Executors of ``@internal`` tasks: the protocol, and the in-process reference implementation."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from zndraw_joblib_core import (
    InvalidTaskTransition,
    LeaseLost,
    ProblemError,
    Retry,
    ServiceUnavailable,
    TaskCancelled,
    TaskNotFound,
    TaskResponse,
    TaskStatus,
    WorkerNotFound,
)
from zndraw_joblib_server.internal.context import InternalTask
from zndraw_joblib_server.internal.runtime import InternalRuntime

__all__ = ["InProcessExecutor", "InternalExecutor"]

logger = logging.getLogger("zndraw_joblib_server.internal")

_GONE = (LeaseLost, TaskNotFound, InvalidTaskTransition)
"""Answers that mean the task is no longer this worker's to report on."""


class InternalExecutor(Protocol):
    """Runs the host's ``@internal`` tasks; the queue starts and stops it with itself.

    An executor serves the jobs of :attr:`InternalRuntime.extensions` through the runtime:
    ``register_worker()`` once (a worker row like any other, so the sweeper, leases and
    metrics apply), then ``heartbeat()`` well within the worker timeout, ``claim()``,
    ``update(..., status="running")``, run the extension, and ``update()`` with the outcome.
    :class:`InProcessExecutor` is the reference implementation; an executor dispatching to
    taskiq, Celery or a GPU box claims here and reports back the same way (or its remote
    side reports over HTTP with the task's token).
    """

    async def start(self, runtime: InternalRuntime) -> None:
        """Begin serving (called by ``JobQueue.start`` after the jobs are registered)."""

    async def stop(self) -> None:
        """Stop serving; tasks still running are released to be claimed again."""


class InProcessExecutor:
    """Runs internal tasks inside the server process, in a bounded pool.

    At most ``concurrency`` tasks run at once: synchronous ``run()`` methods in a thread
    pool of that size, ``async def run()`` on the event loop. Each task's ``run(task,
    **run_kwargs)`` gets an :class:`InternalTask` with the task's own token.

    Args:
        concurrency: Tasks run at once (at least 1).
        identity: Whose rights the per-task token carries: ``submitter`` (the user who
            submitted the task) or ``worker`` (the executor's own account, no superuser).
        run_kwargs: Extra keyword arguments for every ``run``.
        claim_wait: Longest wait of one claim for new work (capped by the settings).
        heartbeat_seconds: Pause between heartbeats, which also deliver cancel requests
            (default: a third of the lease or worker timeout, at most 5 s).
    """

    def __init__(
        self,
        concurrency: int = 4,
        *,
        identity: Literal["submitter", "worker"] = "submitter",
        run_kwargs: dict[str, Any] | None = None,
        claim_wait: float = 30.0,
        heartbeat_seconds: float | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.identity: Literal["submitter", "worker"] = identity
        self.run_kwargs = dict(run_kwargs or {})
        self.claim_wait = claim_wait
        self.heartbeat_seconds = heartbeat_seconds
        self.worker_id: uuid.UUID | None = None
        self._runtime: InternalRuntime | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._running: dict[uuid.UUID, tuple[InternalTask, asyncio.Task[Any] | None]] = {}
        self._slot = asyncio.Event()

    async def start(self, runtime: InternalRuntime) -> None:
        """Register the worker and start the claim and heartbeat loops."""
        if not runtime.extensions:
            return
        self._runtime = runtime
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="joblib-internal")
        self.worker_id = await runtime.register_worker()
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="joblib-internal-claims"),
            asyncio.create_task(self._heartbeat_loop(), name="joblib-internal-heartbeats"),
        ]

    async def stop(self) -> None:
        """Stop the loops, cancel async runs, remove the worker (its tasks are released)."""
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        for loop in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        for _, inner in list(self._running.values()):
            if inner is not None:
                inner.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._runtime is not None and self.worker_id is not None:
            with contextlib.suppress(Exception):
                await self._runtime.remove_worker(self.worker_id)
        self.worker_id = None

    @property
    def _rt(self) -> InternalRuntime:
        assert self._runtime is not None, "the executor was not started"
        return self._runtime

    # -- loops -------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        runtime = self._rt
        wait = min(self.claim_wait, runtime.settings.long_poll_max_wait_seconds)
        failures = 0
        while True:
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            try:
                tasks = await runtime.claim(self._worker(), free, wait)
                failures = 0
            except WorkerNotFound:
                await self._replace_worker()
                continue
            except Exception as exc:
                failures += 1
                if isinstance(exc, ServiceUnavailable):
                    # The server is shutting down (its waits are released before the
                    # executor stops) or cannot take work now: no fault of the executor's.
                    logger.info("internal executor: claim refused (%s)", exc.detail)
                else:
                    logger.exception("internal executor: claim failed")
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            for task in tasks:
                self._begin(task)

    async def _heartbeat_loop(self) -> None:
        runtime = self._rt
        settings = runtime.settings
        interval = self.heartbeat_seconds or (
            min(settings.worker_timeout_seconds, settings.lease_seconds, 15.0) / 3
        )
        while True:
            await asyncio.sleep(interval)
            try:
                answer = await runtime.heartbeat(self._worker())
            except WorkerNotFound:
                await self._replace_worker()
                continue
            except Exception:
                logger.exception("internal executor: heartbeat failed")
                continue
            for task_id in answer.cancel_requested:
                self._cancel(task_id)

    def _worker(self) -> uuid.UUID:
        assert self.worker_id is not None
        return self.worker_id

    async def _replace_worker(self) -> None:
        # swept (e.g. the event loop was blocked past the worker timeout): its tasks were
        # released; serve on with a new worker
        logger.warning(
            "internal executor: worker %s was removed; registering again", self.worker_id
        )
        self.worker_id = await self._rt.register_worker()

    def _cancel(self, task_id: uuid.UUID) -> None:
        entry = self._running.get(task_id)
        if entry is None:
            return
        context, inner = entry
        context.request_cancel()
        if inner is not None:
            inner.cancel()

    # -- one task ----------------------------------------------------------------------------

    def _begin(self, task: TaskResponse) -> None:
        loop = asyncio.get_running_loop()
        context = InternalTask(task, self._rt, self._worker(), loop, None)
        self._running[task.id] = (context, None)  # counted at once: the next claim's slots
        runner = asyncio.create_task(self._run(context), name=f"joblib-internal-{task.id}")
        runner.add_done_callback(functools.partial(self._finished, task.id))

    def _finished(self, task_id: uuid.UUID, runner: asyncio.Task[None]) -> None:
        self._running.pop(task_id, None)
        self._slot.set()
        if not runner.cancelled() and runner.exception() is not None:
            logger.error("internal task %s: executor error", task_id, exc_info=runner.exception())

    async def _run(self, context: InternalTask) -> None:
        runtime = self._rt
        task, worker_id = context.task, context.worker_id
        try:
            context.task = await runtime.update(worker_id, task.id, status=TaskStatus.RUNNING)
        except _GONE as exc:
            logger.info("internal task %s: not started (%s)", task.id, exc)
            return
        try:
            context.use_token(await runtime.task_token(worker_id, task.id, self.identity))
        except ProblemError as exc:  # e.g. the submitter was deleted: run without a token
            logger.warning("internal task %s: no task token (%s)", task.id, exc)
        outcome = await self._outcome(context)
        try:
            await runtime.update(worker_id, task.id, **outcome)
        except _GONE as exc:
            logger.info("internal task %s: outcome dropped (%s)", task.id, exc)

    async def _outcome(self, context: InternalTask) -> dict[str, Any]:
        if context.cancel_requested:
            return {"status": TaskStatus.CANCELLED, "error": "cancelled before it started"}
        cls = self._rt.extensions.get(context.job_name)
        if cls is None:  # pragma: no cover - the worker is linked to these jobs only
            return {"status": TaskStatus.FAILED, "error": "no extension for this job"}
        try:
            extension = cls.model_validate(context.payload)
        except ValidationError as exc:
            return {"status": TaskStatus.FAILED, "error": f"ValidationError: {exc}"}
        try:
            value = await self._call(extension, context)
        except Retry as exc:
            return {"status": TaskStatus.FAILED, "error": str(exc) or "retry", "retry": True}
        except (TaskCancelled, asyncio.CancelledError) as exc:
            if not context.cancel_requested:
                raise  # the executor stops: the task is released with the worker
            return {"status": TaskStatus.CANCELLED, "error": str(exc) or "cancelled"}
        except ProblemError as exc:
            return {"status": TaskStatus.FAILED, "error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:
            # the traceback's end (the settings keep the limit above 0)
            text = "".join(traceback.format_exception(exc))[-self._rt.settings.max_error_chars :]
            return {"status": TaskStatus.FAILED, "error": text}
        try:
            return {"status": TaskStatus.COMPLETED, "result": to_jsonable_python(value)}
        except PydanticSerializationError as exc:
            return {"status": TaskStatus.FAILED, "error": f"result is not JSON: {exc}"}

    async def _call(self, extension: Any, context: InternalTask) -> Any:
        run = extension.run
        if inspect.iscoroutinefunction(run):
            inner = asyncio.ensure_future(run(context, **self.run_kwargs))
            self._running[context.task_id] = (context, inner)
            return await inner
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(run, context, **self.run_kwargs)
        )
