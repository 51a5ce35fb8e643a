"""The worker loop: claim, run, report; heartbeats; graceful shutdown; recovery."""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, Protocol
from uuid import UUID

from pydantic_core import PydanticSerializationError, to_jsonable_python

from zndraw_joblib_client._exchange import Exchange, Report
from zndraw_joblib_client._http import RetryPolicy
from zndraw_joblib_client.errors import (
    ConnectionFailed,
    LoginFailed,
    Retry,
    ServerUnreachable,
    TaskCancelled,
)
from zndraw_joblib_client.task import ClaimedTask
from zndraw_joblib_core import (
    Forbidden,
    InvalidTaskTransition,
    LeaseLost,
    MethodNotAllowed,
    NotFound,
    ProblemError,
    RequestValidationFailed,
    TaskBatchUpdateResponse,
    TaskClaimResponse,
    TaskResponse,
    TaskStatus,
    Unauthorized,
    WorkerNotFound,
    WorkerResponse,
    problem_from_body,
)

__all__ = ["WorkerHost", "WorkerLoop"]

logger = logging.getLogger("zndraw_joblib_client")

_FATAL = (Unauthorized, Forbidden, LoginFailed)
_GONE = (LeaseLost, InvalidTaskTransition, NotFound)
_REPORT_WAIT = 1.0
"""Longest a request carrying reports waits for the next claim (seconds)."""
_OLDER_SERVER = (RequestValidationFailed, MethodNotAllowed)
"""How a server without ``start`` / ``claim_next`` refuses them."""

_Finished = tuple[ClaimedTask[Any], dict[str, Any]]
"""A finished task and its report's fields."""


class WorkerHost(Protocol):
    """What the worker loop needs from its client (a ``JobManager`` is one)."""

    @property
    def worker_id(self) -> UUID | None:
        """The current worker id, or None."""
        ...

    @property
    def retry_policy(self) -> RetryPolicy:
        """The backoff used between failed claims."""
        ...

    def ensure_worker(self) -> UUID:
        """Return the worker id, creating the worker on first use."""
        ...

    def recover_worker(self, lost: UUID) -> UUID:
        """Replace a worker the server lost and return the new id."""
        ...

    def heartbeat(self) -> WorkerResponse:
        """Tell the server the worker is alive."""
        ...

    def claim_detailed(
        self, max_tasks: int = 1, wait: float | None = None, *, retry_transient: bool = True
    ) -> tuple[list[ClaimedTask[Any]], bool]:
        """Claim tasks; also say whether the server long-polled."""
        ...

    def update_task(
        self,
        task_id: UUID | str,
        *,
        status: TaskStatus | str | None = ...,
        error: str | None = ...,
        worker_id: UUID | None = ...,
        progress: float | None = ...,
        message: str | None = ...,
        result: Any = ...,
        retry: bool | None = ...,
    ) -> TaskResponse:
        """Update one task."""
        ...

    def update_tasks(
        self, items: Sequence[Mapping[str, Any]], *, minimal: bool = False
    ) -> TaskBatchUpdateResponse:
        """Update several tasks in one request."""
        ...

    def exchange(
        self,
        reports: Sequence[Report],
        claim: int = 0,
        wait: float | None = None,
        *,
        start: bool = True,
    ) -> Exchange:
        """Send reports and a claim in one request (see ``TasksApi.exchange``)."""
        ...

    def claimed_task(self, task: TaskResponse, worker_id: UUID) -> ClaimedTask[Any]:
        """A claimed task bound to its registered extension."""
        ...


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying later (unreachable server, 5xx, 429)."""
    if isinstance(exc, ConnectionFailed):
        return True
    return isinstance(exc, ProblemError) and (exc.http_status >= 500 or exc.http_status == 429)


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, without a traceback."""
    if isinstance(exc, ProblemError):
        problem = exc.to_problem()
        detail = f": {problem.detail}" if problem.detail else ""
        return f"{problem.title} ({problem.status}){detail}"
    if isinstance(exc, ServerUnreachable):
        return str(exc)
    if isinstance(exc, ConnectionFailed) and exc.__cause__ is not None:
        cause = exc.__cause__
        return f"{type(cause).__name__}: {cause}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


class _Outage:
    """Counts failed claims in a row: the next pause, the log line, when to give up."""

    def __init__(self, policy: RetryPolicy, limit: float | None) -> None:
        self.policy = policy
        self.limit = limit
        self.since: float | None = None
        self.failures = 0

    def ended(self) -> None:
        if self.since is not None:
            down = time.monotonic() - self.since
            logger.warning("server reachable again (was down for %.0f s)", down)
        self.since = None
        self.failures = 0

    def failed(self, exc: BaseException, started: float) -> float:
        """Return the pause before the next claim, or raise ServerUnreachable."""
        if self.since is None:
            self.since = started
        self.failures += 1
        down = time.monotonic() - self.since
        if self.limit is not None and down >= self.limit:
            raise ServerUnreachable(
                f"server unreachable for {down:.0f} s (max_unreachable_seconds="
                f"{self.limit:g}); last error: {describe(exc)}",
                down_for=down,
            )
        delay = self.policy.backoff(self.failures)
        if self.limit is not None:
            delay = min(delay, self.limit - down)
        logger.warning(
            "server unreachable (%s); retrying in %.1f s (down for %.0f s)",
            describe(exc),
            delay,
            down,
        )
        return delay


def format_error(exc: BaseException, limit: int) -> str:
    """Render an exception and its traceback, cut in the middle to ``limit`` UTF-8 bytes."""
    text = f"{type(exc).__name__}: {exc}\n\n" + "".join(traceback.format_exception(exc))
    raw = text.encode()
    if len(raw) <= limit:
        return text
    marker = b"\n... [truncated] ...\n"
    head = max(0, limit // 4)
    tail = max(0, limit - head - len(marker))
    return (raw[:head] + marker + raw[len(raw) - tail :]).decode(errors="ignore")


class WorkerLoop:
    """Claims tasks for a :class:`JobManager`'s worker and runs their extensions.

    Args:
        manager: The manager whose worker and registered extensions are used.
        concurrency: How many tasks run at once (in threads when above 1).
        claim_wait: Seconds a claim long-poll may be held by the server (its cap is 60 s
            by default). Each claim also counts as a heartbeat on the server.
        poll_interval: Pause between claims when the server does not long-poll.
        heartbeat_interval: Seconds between heartbeats while tasks run (they renew the
            tasks' leases, 60 s by default). An idle worker whose claims keep reaching the
            server sends none; it heartbeats only when no claim started for
            ``idle_heartbeat_after`` seconds.
        idle_heartbeat_after: See ``heartbeat_interval``; keep it well below the server's
            worker timeout (120 s by default).
        execute: Called with each claimed task instead of ``task.extension.run(task,
            **run_kwargs)``; its return value is the result (``task.run_kwargs`` holds the
            job's registered keyword arguments).
        run_kwargs: Extra keyword arguments passed to every job's ``run``; a job's own
            ``register(..., run_kwargs=)`` entries win over these.
        install_signal_handlers: In :meth:`run` on the main thread, stop on SIGINT/SIGTERM
            (a second signal releases the running tasks).
        report_timeout: How long to keep retrying a task's final report while the server
            is unreachable.
        max_error_bytes: Longest error text reported for a failed task.
        max_unreachable_seconds: Give up when claims have failed with connection errors,
            5xx or 429 for this long: the loop stops with :class:`ServerUnreachable`. None
            (the default) retries for ever. Between failed claims the loop waits with
            exponential backoff and full jitter (capped by the manager's retry policy's
            ``max_delay``) and logs one line per failure with the time it has been down.
        gather_seconds: Tasks claimed together that finish within this many seconds of
            their start report together, in one request with the next claim: the first to
            finish waits for the others up to then. A task that runs longer never waits,
            nor does one running alone; 0 sends each report as soon as the loop is free.

    Errors retrying cannot fix stop the loop at once, logged as one line and raised by
    :meth:`run` / ``JobManager.serve``: ``Unauthorized`` (401), ``Forbidden`` (403),
    ``LoginFailed``, and ``NotFound`` (404) for the worker's own endpoints (for example a
    wrong URL). A worker the server lost (``WorkerNotFound``) is replaced; when the new
    worker's first claim is refused the same way, the loop stops.
    """

    def __init__(
        self,
        manager: WorkerHost,
        *,
        concurrency: int = 1,
        claim_wait: float = 55.0,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 10.0,
        idle_heartbeat_after: float = 60.0,
        execute: Callable[[ClaimedTask[Any]], Any] | None = None,
        run_kwargs: Mapping[str, Any] | None = None,
        install_signal_handlers: bool = True,
        report_timeout: float = 300.0,
        max_error_bytes: int = 16 * 1024,
        max_unreachable_seconds: float | None = None,
        gather_seconds: float = 0.002,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_unreachable_seconds is not None and max_unreachable_seconds < 0:
            raise ValueError("max_unreachable_seconds must not be negative")
        if gather_seconds < 0:
            raise ValueError("gather_seconds must not be negative")
        self.manager = manager
        self.concurrency = concurrency
        self.claim_wait = claim_wait
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.idle_heartbeat_after = idle_heartbeat_after
        self._last_claim = 0.0  # monotonic time the last claim request started
        self.execute = execute
        self.run_kwargs = dict(run_kwargs or {})
        self.install_signal_handlers = install_signal_handlers
        self.report_timeout = report_timeout
        self.max_error_bytes = max_error_bytes
        self.max_unreachable_seconds = max_unreachable_seconds
        self.gather_seconds = gather_seconds
        self._outage = _Outage(manager.retry_policy, max_unreachable_seconds)
        self._just_recovered = False  # the worker was replaced and has not claimed since
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        """Wakes the loop thread: a slot freed, a report queued, a stop."""
        self._settled = threading.Condition(lock)
        """Wakes :meth:`join`: a stop, the loop's end, the last running task gone after a
        stop. Apart from ``_cond`` so that a finishing task does not wake the caller's
        thread each time (a thread switch per task)."""
        self._stop = threading.Event()
        self._force = threading.Event()
        self._halt = threading.Event()
        self._done = threading.Event()
        self._running: dict[UUID, ClaimedTask[Any]] = {}
        self._released: set[UUID] = set()
        self._in_claim = False
        self._error: BaseException | None = None
        self._batch_ok = True
        self._lean = True  # the server takes start and claim_next (one request per task)
        self._outbox: list[_Finished] = []  # finished tasks whose reports the loop sends
        self._direct = True  # finishing tasks report on their own (the loop is waiting)
        self._starved = False  # the last claim found nothing
        self._round_started = 0.0  # monotonic time the last claimed tasks were dispatched
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None

    # -- control --------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the loop was started and has not finished."""
        return bool(self._threads) and not self._done.is_set()

    def start(self) -> None:
        """Start the loop and heartbeat threads and return."""
        for name, target in (("loop", self._loop), ("heartbeat", self._heartbeats)):
            thread = threading.Thread(target=target, name=f"zndraw-joblib-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def run(self) -> None:
        """Run until stopped, a fatal error, or SIGINT/SIGTERM; then return or raise."""
        handlers = self._install_handlers()
        try:
            self.start()
            self.join()
        finally:
            for signum, previous in handlers.items():
                signal.signal(signum, previous)
        self.raise_error()

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming; with ``force`` also release the running tasks."""
        self._stop.set()
        if force:
            self._force.set()
        with self._cond:
            self._cond.notify_all()
            self._settled.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the loop has nothing left to do; return False on timeout.

        Returns once the loop thread ended, or it is stopped with no running task (a claim
        long-poll still in flight is abandoned), or at once after a forced stop.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._settled:
            while not (
                self._done.is_set()
                or self._force.is_set()
                or (self._stop.is_set() and not self._running and self._in_claim)
            ):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._settled.wait(0.5 if left is None else min(0.5, left))
        if self._force.is_set():
            self._release_running()
        self._halt.set()
        return True

    def raise_error(self) -> None:
        """Raise the error that stopped the loop, if any."""
        if self._error is not None:
            raise self._error

    def _install_handlers(self) -> dict[int, Any]:
        if not self.install_signal_handlers:
            return {}
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handle(signum: int, frame: FrameType | None) -> None:
            # Only set events here: the interrupted code may hold the condition's lock.
            if self._stop.is_set():
                logger.warning("second signal: releasing running tasks")
                self._force.set()
            else:
                logger.warning(
                    "signal %d: stopping after the running tasks (signal again to abandon)",
                    signum,
                )
            self._stop.set()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handle)
        return previous

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            logger.error("worker stopped: %s", describe(exc))
        self.stop()

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        outage = self._outage
        try:
            while True:
                with self._cond:
                    self._direct = False  # finishing tasks leave their reports to the loop
                    while (
                        not self._stop.is_set()
                        and not self._outbox
                        and len(self._running) >= self.concurrency
                    ):
                        self._cond.wait(0.5)
                    if self._stop.is_set():
                        break
                    self._gather()
                    reports, self._outbox = self._outbox, []
                    free = self.concurrency - len(self._running) + len(reports)
                    busy = len(self._running) > len(reports)
                    # Wait for work only when nothing else runs, or when a claim just found
                    # nothing; while the request waits, finishing tasks report on their own.
                    wait = self.claim_wait if self._starved or not busy else None
                    if wait is not None and reports:
                        # A report in flight keeps its task running (a stop waits for it):
                        # a request carrying reports waits for work only briefly.
                        wait = min(wait, _REPORT_WAIT)
                    self._direct = wait is not None
                    self._in_claim = True
                started = time.monotonic()
                try:
                    self._cycle(reports, free, wait)
                except Exception as exc:
                    if self._stop.is_set():
                        logger.debug("loop ended during shutdown: %s", exc)
                        break
                    if not is_transient(exc):
                        self._fail(exc)
                        break
                    try:
                        delay = outage.failed(exc, started)
                    except ServerUnreachable as gave_up:
                        self._fail(gave_up)
                        break
                    self._stop.wait(delay)
        finally:
            with self._cond:
                self._in_claim = False
                self._direct = True
                reports, self._outbox = self._outbox, []
            self._report_each(reports)
            if self._pool is not None:
                self._pool.shutdown(wait=not self._force.is_set())
            self._done.set()
            self._halt.set()
            with self._cond:
                self._cond.notify_all()
                self._settled.notify_all()

    def _gather(self) -> None:
        """Wait briefly for the other tasks of a round of short tasks (``_cond`` held).

        Tasks claimed together and finishing within ``gather_seconds`` of their start
        report in one request, not the first alone and the rest in the next.
        """
        until = self._round_started + self.gather_seconds
        while (
            0 < len(self._outbox) < len(self._running)
            and not self._stop.is_set()
            and (left := until - time.monotonic()) > 0
        ):
            self._cond.wait(left)

    def _cycle(self, reports: list[_Finished], free: int, wait: float | None) -> None:
        """Send the finished tasks' reports with a claim for ``free`` slots; run what came."""
        try:
            worker_id = self.manager.ensure_worker()
            try:
                self._last_claim = time.monotonic()
                answer = self._round(reports, free, wait)
                self._outage.ended()
                self._just_recovered = False
            except WorkerNotFound:
                self._outage.ended()
                if self._just_recovered:
                    raise  # the new worker is refused too: recovering again cannot help
                self.manager.recover_worker(worker_id)
                self._just_recovered = True
                return
        finally:
            for task, _fields in reports:
                self._forget(task)
            with self._cond:
                self._in_claim = False
                self._direct = False  # the request is back: what it hands out reports via the loop
        if answer is not None and answer.claim is not None:
            self._take(answer.claim, worker_id, answer.waited, wait)

    def _take(
        self, answer: TaskClaimResponse, worker_id: UUID, waited: bool, wait: float | None
    ) -> None:
        """Handle a claim's answer, a claim's or an update's ``claimed``: the one place."""
        raw = answer.tasks or ([answer.task] if answer.task is not None else [])
        tasks = [self.manager.claimed_task(task, worker_id) for task in raw]
        self._starved = not tasks
        if self._stop.is_set():
            # Stopping: tasks the claim started are running on the server, so they are run
            # like the others that run; merely claimed ones are handed back.
            started = [t for t in tasks if t.task.status is TaskStatus.RUNNING]
            self._release([t for t in tasks if t not in started], "worker stopping")
            tasks = started
        if tasks:
            self._dispatch(tasks)
        elif wait is not None and not waited and not self._stop.is_set():
            self._stop.wait(self.poll_interval)  # the server does not long-poll

    def _round(self, reports: list[_Finished], free: int, wait: float | None) -> Exchange | None:
        """One request: the reports and a claim; None when no claim was made."""
        answer = self._send_round(reports, free, wait)
        if answer is None:
            return None
        for (task, _fields), outcome in zip(reports, answer.outcomes, strict=False):
            if not outcome.ok:
                logger.warning("task %s: update refused (%s)", task.task_id, outcome.problem)
        problem = getattr(answer.claim, "problem", None)
        if problem is not None:
            raise problem_from_body(problem)  # the reports were applied; the claim was not
        return answer

    def _send_round(
        self, reports: list[_Finished], free: int, wait: float | None
    ) -> Exchange | None:
        if self._lean:
            lean = [Report(task.task_id, task.worker_id, fields) for task, fields in reports]
            try:
                return self.manager.exchange(lean, free, wait)
            except Exception as exc:
                older = isinstance(exc, _OLDER_SERVER)
                if isinstance(exc, _FATAL) or not (reports or older):
                    raise
                if not older and not is_transient(exc) and len(reports) == 1:
                    task = reports[0][0]
                    logger.warning("task %s: update refused (%s)", task.task_id, exc)
                    return None  # nothing was claimed either
                if not older:
                    self._report_each(reports)  # report the usual way (retrying)
                    return None
                logger.info("the server predates claim_next (%s): two requests per task", exc)
                self._lean = False
        self._report_each(reports)
        return self.manager.exchange([], free, wait, start=False)

    def _dispatch(self, tasks: list[ClaimedTask[Any]]) -> None:
        with self._cond:
            self._round_started = time.monotonic()
            for task in tasks:
                self._running[task.task_id] = task
        try:
            # A server that ignores ``start`` hands the tasks out claimed: start them here.
            started = [t for t in tasks if t.task.status is not TaskStatus.CLAIMED]
            fresh = [t for t in tasks if t.task.status is TaskStatus.CLAIMED]
            if fresh:
                started += self._start_tasks(fresh)
        except BaseException:
            for task in tasks:
                self._forget(task)
            raise
        for task in started:
            if self._pool is None:
                self._run_one(task)
            else:
                self._pool.submit(self._run_one, task)

    def _start_tasks(self, tasks: list[ClaimedTask[Any]]) -> list[ClaimedTask[Any]]:
        started: list[ClaimedTask[Any]] = []
        if len(tasks) > 1 and self._batch_ok:
            try:
                answer = self.manager.update_tasks(
                    [
                        {"task_id": t.task_id, "status": "running", "worker_id": t.worker_id}
                        for t in tasks
                    ]
                )
            except (NotFound, MethodNotAllowed):
                self._batch_ok = False  # an older server: update one by one from now on
            except Exception as exc:
                if not is_transient(exc):
                    raise
                logger.warning("batch start failed (%s); starting tasks one by one", exc)
            else:
                for task, outcome in zip(tasks, answer.items, strict=False):
                    if outcome.ok and outcome.task is not None:
                        task.task = outcome.task
                        started.append(task)
                    else:
                        logger.warning(
                            "could not start task %s: %s", task.task_id, outcome.problem
                        )
                        self._forget(task)
                return started
        for task in tasks:
            answer = self._send(task, status=TaskStatus.RUNNING)
            if answer is None:
                self._forget(task)
            else:
                task.task = answer
                started.append(task)
        return started

    def _run_one(self, task: ClaimedTask[Any]) -> None:
        queued = False
        try:
            if task.task.cancel_requested:
                task.request_cancel()
            try:
                outcome = self._outcome(task)
            except LeaseLost as exc:
                logger.warning("task %s: lease lost while running (%s)", task.task_id, exc)
                return
            queued = self._finish(task, outcome)
        except Exception as exc:
            self._fail(exc)
        finally:
            if not queued:
                self._forget(task)

    def _finish(self, task: ClaimedTask[Any], fields: dict[str, Any]) -> bool:
        """Report a finished task: queued for the loop's next request (True), or sent now.

        The loop sends queued reports with its next claim; while its request waits for work
        (or after it stopped), a task reports on its own so its outcome is not held back.
        """
        with self._cond:
            if self._pool is None or not self._direct:
                self._outbox.append((task, fields))
                self._cond.notify_all()
                return True
        self._send(task, **fields)
        return False

    def _outcome(self, task: ClaimedTask[Any]) -> dict[str, Any]:
        if task.cancel_requested:
            return {"status": TaskStatus.CANCELLED, "error": "cancelled before it started"}
        problem = task.extension_error()
        if problem is not None:
            return {"status": TaskStatus.FAILED, "error": problem}
        try:
            if self.execute is not None:
                value = self.execute(task)
            else:
                # the job's own run_kwargs (register(..., run_kwargs=)) win over the loop's
                value = task.extension.run(task, **{**self.run_kwargs, **task.run_kwargs})
        except Retry as exc:
            return {"status": TaskStatus.FAILED, "error": str(exc) or "retry", "retry": True}
        except TaskCancelled as exc:
            return {"status": TaskStatus.CANCELLED, "error": str(exc) or "cancelled"}
        except LeaseLost:
            raise
        except Exception as exc:
            logger.info("task %s failed: %s", task.task_id, exc)
            return {"status": TaskStatus.FAILED, "error": format_error(exc, self.max_error_bytes)}
        try:
            result = to_jsonable_python(value)
        except PydanticSerializationError as exc:
            return {"status": TaskStatus.FAILED, "error": f"result is not JSON: {exc}"}
        return {"status": TaskStatus.COMPLETED, "result": result}

    # -- reporting ------------------------------------------------------------------------

    def _report_each(self, reports: list[_Finished]) -> None:
        for task, fields in reports:
            self._send(task, **fields)

    def _send(self, task: ClaimedTask[Any], **fields: Any) -> Any:
        """PATCH the task, retrying transient failures; None when the task is no longer ours."""
        deadline = time.monotonic() + self.report_timeout
        retried = 0
        while task.task_id not in self._released:
            try:
                return self.manager.update_task(task.task_id, worker_id=task.worker_id, **fields)
            except LeaseLost as exc:
                logger.warning("task %s: lease lost, update dropped (%s)", task.task_id, exc)
                return None
            except _GONE as exc:
                level = logging.DEBUG if retried else logging.WARNING
                logger.log(level, "task %s: update refused (%s)", task.task_id, exc)
                return None
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    if isinstance(exc, _FATAL):
                        raise
                    logger.error("task %s: update failed for good: %s", task.task_id, exc)
                    return None
                retried += 1
                self._force.wait(self.manager.retry_policy.delay(retried))
        return None

    def _release(self, tasks: list[ClaimedTask[Any]], reason: str) -> None:
        for task in tasks:
            try:
                self.manager.update_task(
                    task.task_id,
                    worker_id=task.worker_id,
                    status=TaskStatus.FAILED,
                    error=reason,
                    retry=True,
                )
            except Exception as exc:
                logger.debug("releasing task %s: %s", task.task_id, exc)

    def _release_running(self) -> None:
        with self._cond:
            tasks = [t for t in self._running.values() if t.task_id not in self._released]
            self._released.update(t.task_id for t in tasks)
        self._release(tasks, "worker shut down before the task finished")

    def _forget(self, task: ClaimedTask[Any]) -> None:
        with self._cond:
            self._running.pop(task.task_id, None)
            self._cond.notify_all()
            self._settle_if_stopping()

    def _settle_if_stopping(self) -> None:
        """Wake :meth:`join` if a stop was asked for (``_cond`` held): it may be done now."""
        if self._stop.is_set():
            self._settled.notify_all()

    # -- heartbeats -----------------------------------------------------------------------

    def _heartbeats(self) -> None:
        while not self._halt.wait(self.heartbeat_interval):
            worker_id = self.manager.worker_id
            if worker_id is None:
                continue
            with self._cond:
                idle = not self._running
            if idle and time.monotonic() - self._last_claim < self.idle_heartbeat_after:
                continue  # the claims themselves keep the worker alive on the server
            try:
                answer = self.manager.heartbeat()
            except WorkerNotFound:
                try:
                    self.manager.recover_worker(worker_id)
                except Exception as exc:
                    self._heartbeat_error(exc)
                continue
            except Exception as exc:
                self._heartbeat_error(exc)
                continue
            with self._cond:
                for task_id in answer.cancel_requested:
                    task = self._running.get(task_id)
                    if task is not None:
                        task.request_cancel()

    def _heartbeat_error(self, exc: Exception) -> None:
        if is_transient(exc) or not isinstance(exc, _FATAL):
            logger.warning("heartbeat failed: %s", exc)
        else:
            self._fail(exc)
