"""Task, job and worker reads and task writes; ``JobManager`` holds one and delegates."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote
from uuid import UUID

from pydantic import JsonValue

from zndraw_joblib_client._exchange import Exchange, Report, answer_of, encode, request_of
from zndraw_joblib_client._http import HttpSession, Sender
from zndraw_joblib_client._registry import Registration
from zndraw_joblib_client.errors import UnexpectedResponse
from zndraw_joblib_client.extension import Extension, category_value, job_full_name
from zndraw_joblib_client.task import ClaimedTask
from zndraw_joblib_core import (
    API_PREFIX,
    DEFAULT_PAGE_LIMIT,
    GLOBAL_ROOM,
    MAX_SUBMIT_BATCH,
    JobResponse,
    JobSummary,
    Page,
    TaskBatchSubmitRequest,
    TaskBatchSubmitResponse,
    TaskBatchUpdateItem,
    TaskBatchUpdateResponse,
    TaskClaimResponse,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
    TaskUpdateRequest,
    WorkerSummary,
    parse_job_name,
)

__all__ = ["TasksApi"]

_UNSET: Any = object()
_WAIT_SLACK = 10.0  # seconds added to a long-poll's read timeout
_FALLBACK_POLL = 1.0  # seconds between polls when the server ignores Prefer: wait


def _seg(value: str) -> str:
    return quote(value, safe="@:")


def _signature(task: TaskResponse) -> tuple[Any, ...]:
    return (
        task.status,
        task.attempt,
        task.progress,
        task.message,
        task.cancel_requested,
        task.worker_id,
    )


def api_path(*parts: str) -> str:
    """The path of a joblib endpoint: ``API_PREFIX`` and the URL-quoted segments."""
    return "/".join([API_PREFIX, *(_seg(p) for p in parts)])


class TasksApi:
    """Requests about tasks, jobs and workers (:class:`JobManager` delegates to one).

    Args:
        session: Returns the request sender (called per request; it is built lazily).
        worker_session: Returns the sender of the worker loop's exchanges (default
            ``session``'s).
        worker_id: Returns the id of the client's worker, or None before there is one.
        lookup: Returns the client's registration of a job's full name, or None.
        sleep: The function used to pause between fallback polls.
        idempotent_submits: Send a fresh ``Idempotency-Key`` with every submit.
    """

    def __init__(
        self,
        session: Callable[[], HttpSession],
        *,
        worker_session: Callable[[], Sender] | None = None,
        worker_id: Callable[[], UUID | None],
        lookup: Callable[[str], Registration | None],
        sleep: Callable[[float], None] = time.sleep,
        idempotent_submits: bool = True,
    ) -> None:
        self._session = session
        self._worker_session: Callable[[], Sender] = worker_session or session
        self._current_worker = worker_id
        self._lookup = lookup
        self._sleep = sleep
        self.idempotent_submits = idempotent_submits
        self.on_provider_reads: Callable[[list[Any]], None] | None = None
        """Set by a client serving providers: claims then ask for provider reads too, and
        each claim answer's reads are handed to it."""

    @property
    def http(self) -> HttpSession:
        """The request sender."""
        return self._session()

    @property
    def _worker_id(self) -> UUID | None:
        return self._current_worker()

    _path = staticmethod(api_path)

    def _require_worker(self) -> UUID:
        worker_id = self._worker_id
        if worker_id is None:
            raise RuntimeError("no worker yet: call create_worker() or register() first")
        return worker_id

    def _claimed(self, task: TaskResponse, worker_id: UUID) -> ClaimedTask[Any]:
        entry = self._lookup(task.job_name)
        return ClaimedTask(
            task,
            manager=self,
            worker_id=worker_id,
            extension_cls=entry.cls if entry else None,
            run_kwargs=entry.run_kwargs if entry else None,
        )

    # -- submitting and watching ----------------------------------------------------------

    def submit(
        self,
        job: Extension | str,
        room: str,
        *,
        payload: Mapping[str, Any] | None = None,
        job_room: str = GLOBAL_ROOM,
        priority: int | None = None,
        run_after: datetime | None = None,
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
        idempotency_key: str | None = None,
    ) -> TaskResponse:
        """Submit a task (``POST /rooms/{room}/tasks/{job}``).

        Args:
            job: An extension instance (its fields are the payload) or a job's full name.
            room: The room the task is submitted from.
            payload: The payload when ``job`` is a name.
            job_room: The room of the job when ``job`` is an instance (default ``@global``).
            priority: Higher is claimed first.
            run_after: Not claimable before this time (naive times are read as UTC).
            max_attempts: How many claims are allowed.
            timeout_seconds: Longest run time.
            idempotency_key: Sent as ``Idempotency-Key``; a repeat returns the first task.
                By default a fresh key is sent so that the submit can be retried safely.

        Returns:
            The task (new, or the existing one for a repeated idempotency key).

        Raises:
            JobNotFound: No such job visible from the room.
            InvalidPayload: The payload does not match the job's schema.
        """
        if isinstance(job, Extension):
            if payload is not None:
                raise ValueError("give payload only with a job name")
            job_name = job_full_name(type(job), job_room)
            data: dict[str, Any] = job.model_dump(mode="json")
        else:
            job_name = job
            data = dict(payload or {})
        options = self._submit_options(priority, run_after, max_attempts, timeout_seconds)
        body = TaskSubmitRequest(payload=data, **options).model_dump(
            mode="json", exclude_unset=True
        )
        headers: dict[str, str] = {}
        if idempotency_key is None and self.idempotent_submits:
            idempotency_key = str(uuid.uuid4())
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        response = self.http.request(
            "POST", self._path("rooms", room, "tasks", job_name), json=body, headers=headers
        )
        return TaskResponse.model_validate(response.json())

    def submit_many(
        self,
        job: type[Extension] | Extension | str,
        room: str,
        payloads: Iterable[Mapping[str, Any] | Extension],
        *,
        job_room: str = GLOBAL_ROOM,
        priority: int | None = None,
        run_after: datetime | None = None,
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
        idempotency_key: str | None = None,
    ) -> list[TaskResponse]:
        """Submit many tasks of one job (``POST /rooms/{room}/jobs/{job}/tasks``).

        The payloads are sent in chunks of at most ``MAX_SUBMIT_BATCH`` (1000), one request
        per chunk. Each chunk is its own all-or-nothing transaction: when the server refuses
        one entry, no task of that chunk is created, but the tasks of earlier chunks stay
        created. Calling again with the same ``idempotency_key`` and payloads then returns
        the tasks already created and creates only the missing ones.

        Args:
            job: An extension class or instance (only its class is used; it names the job)
                or a job's full name.
            room: The room the tasks are submitted from.
            payloads: One payload per task: a mapping, or an instance of the job's extension
                class whose fields are the payload (as with :meth:`submit`).
            job_room: The room of the job when ``job`` is a class or instance (default
                ``@global``).
            priority: Higher is claimed first; applies to every task.
            run_after: Not claimable before this time (naive times are read as UTC); applies
                to every task.
            max_attempts: How many claims are allowed for each task.
            timeout_seconds: Longest run time of each task.
            idempotency_key: Chunk ``i`` (from 0) is sent with the ``Idempotency-Key``
                ``{idempotency_key}:{i}``; a repeat returns the chunk's existing tasks. By
                default every chunk gets a fresh key so that its request can be retried
                safely.

        Returns:
            The tasks in the order of ``payloads`` (new, or the existing ones of a repeated
            idempotency key); an empty list, without any request, for no payloads.

        Raises:
            ValueError: An extension instance in ``payloads`` is not of the job's class.
            TypeError: ``payloads`` is a single payload, or holds something that is neither a
                mapping nor an extension instance.
            JobNotFound: No such job visible from the room.
            InvalidPayload: A payload does not match the job's schema (nothing of its chunk
                is created).
            PayloadTooLarge: A payload or the request exceeds the server's limits.
            UnexpectedResponse: The server answered a different number of tasks than sent.
        """
        if isinstance(payloads, (Mapping, Extension, str, bytes)):
            raise TypeError("payloads must be an iterable of payloads, not a single payload")
        if isinstance(job, str):
            job_name = job
            parsed = parse_job_name(job)
            expected = None if parsed is None else (parsed.category, parsed.name)
        else:
            cls = job if isinstance(job, type) else type(job)
            job_name = job_full_name(cls, job_room)
            expected = (category_value(cls), cls.__name__)
        options = self._submit_options(priority, run_after, max_attempts, timeout_seconds)
        items: list[TaskSubmitRequest] = []
        for index, payload in enumerate(payloads):
            if isinstance(payload, Extension):
                kind = (category_value(type(payload)), type(payload).__name__)
                if expected is not None and kind != expected:
                    raise ValueError(
                        f"payloads[{index}] is a {type(payload).__name__}, "
                        f"not a payload of the job {job_name}"
                    )
                data: dict[str, Any] = payload.model_dump(mode="json")
            elif isinstance(payload, Mapping):
                data = dict(payload)
            else:
                raise TypeError(
                    f"payloads[{index}] must be a mapping or an Extension instance, "
                    f"not {type(payload).__name__}"
                )
            items.append(TaskSubmitRequest(payload=data, **options))
        if not items:
            return []

        path = self._path("rooms", room, "jobs", job_name, "tasks")
        chunks = [
            items[start : start + MAX_SUBMIT_BATCH]
            for start in range(0, len(items), MAX_SUBMIT_BATCH)
        ]
        tasks: list[TaskResponse] = []
        for number, chunk in enumerate(chunks):
            body = TaskBatchSubmitRequest(items=chunk).model_dump(mode="json", exclude_unset=True)
            headers: dict[str, str] = {}
            if idempotency_key is not None:
                headers["Idempotency-Key"] = f"{idempotency_key}:{number}"
            elif self.idempotent_submits:
                headers["Idempotency-Key"] = str(uuid.uuid4())
            try:
                response = self.http.request("POST", path, json=body, headers=headers)
            except Exception as exc:
                if len(chunks) > 1:
                    exc.add_note(
                        f"submit_many: chunk {number + 1} of {len(chunks)} (payloads "
                        f"{len(tasks)} to {len(tasks) + len(chunk) - 1}) failed; the "
                        f"{len(tasks)} tasks of earlier chunks were created"
                    )
                raise
            answer = TaskBatchSubmitResponse.model_validate(response.json())
            if len(answer.items) != len(chunk):
                raise UnexpectedResponse(
                    f"batch submit of {len(chunk)} tasks answered {len(answer.items)}",
                    status_code=response.status_code,
                )
            tasks.extend(answer.items)
        return tasks

    @staticmethod
    def _submit_options(
        priority: int | None,
        run_after: datetime | None,
        max_attempts: int | None,
        timeout_seconds: float | None,
    ) -> dict[str, Any]:
        options = {
            "priority": priority,
            "run_after": run_after,
            "max_attempts": max_attempts,
            "timeout_seconds": timeout_seconds,
        }
        return {key: value for key, value in options.items() if value is not None}

    def get_task(self, task_id: UUID | str) -> TaskResponse:
        """Return a task (``GET /tasks/{id}``).

        Raises:
            TaskNotFound: No such task visible to the caller.
        """
        response = self.http.request("GET", self._path("tasks", str(task_id)))
        return TaskResponse.model_validate(response.json())

    def wait(
        self,
        task_id: UUID | str,
        timeout: float | None = None,
        *,
        wait_for: Literal["terminal", "change"] = "terminal",
        since: TaskResponse | None = None,
        poll: float = 30.0,
    ) -> TaskResponse:
        """Wait for a task to finish (or change) by long-polling ``GET /tasks/{id}``.

        Each request asks the server to hold it (``Prefer: wait=N``, ``N <= poll``); a server
        that does not (no ``Preference-Applied``) is polled every second instead.

        Args:
            task_id: The task.
            timeout: Longest wait in seconds; None waits until the condition holds.
            wait_for: ``terminal`` for a final state; ``change`` for any change of status,
                attempt, progress, message or cancellation compared to ``since``.
            since: The state to compare against with ``change`` (fetched first if None).
            poll: Longest single long-poll in seconds.

        Returns:
            The task once the condition holds, or its latest state when ``timeout`` passed
            (check ``task.status.is_terminal``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if wait_for == "change" and since is None:
            since = self.get_task(task_id)
            if since.status.is_terminal:
                return since
        params = {"wait_for": "change"} if wait_for == "change" else None
        while True:
            remaining = poll if deadline is None else min(poll, deadline - time.monotonic())
            seconds = max(0, math.floor(remaining))
            headers = {"Prefer": f"wait={seconds}"} if seconds > 0 else {}
            if since is not None and wait_for == "change":
                # the server answers at once when the task moved past this version
                headers["If-None-Match"] = f'"{since.version}"'

            response = self.http.request(
                "GET",
                self._path("tasks", str(task_id)),
                params=params,
                headers=headers,
                timeout=seconds + _WAIT_SLACK,
            )
            task = TaskResponse.model_validate(response.json())
            if task.status.is_terminal:
                return task
            if since is not None and _signature(task) != _signature(since):
                return task
            if deadline is not None and time.monotonic() >= deadline:
                return task
            if "preference-applied" not in response.headers:
                pause = _FALLBACK_POLL
                if deadline is not None:
                    pause = max(0.0, min(pause, deadline - time.monotonic()))
                self._sleep(pause)

    def cancel(self, task_id: UUID | str) -> TaskResponse:
        """Cancel a task (``POST /tasks/{id}/cancel``).

        A pending task is cancelled at once; a claimed or running one is marked
        ``cancel_requested`` until its worker acknowledges.
        """
        response = self.http.request("POST", self._path("tasks", str(task_id), "cancel"))
        return TaskResponse.model_validate(response.json())

    # -- listings -------------------------------------------------------------------------

    def list_jobs(
        self,
        room: str,
        *,
        limit: int = DEFAULT_PAGE_LIMIT,
        offset: int = 0,
        live: bool | None = None,
    ) -> Page[JobSummary]:
        """List the jobs visible from a room (its own and ``@global``), newest first.

        Each job counts its live workers (``live_workers``). ``live=True`` lists only the
        jobs a live worker serves, ``live=False`` only those none does.
        """
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if live is not None:
            params["live"] = "true" if live else "false"
        response = self.http.request("GET", self._path("rooms", room, "jobs"), params=params)
        return Page[JobSummary].model_validate(response.json())

    def get_job(self, room: str, job_name: str) -> JobResponse:
        """Return a job visible from a room.

        Args:
            room: The room looking at the job.
            job_name: The job's full name.

        Raises:
            JobNotFound: Missing, deleted or not visible from the room.
        """
        response = self.http.request("GET", self._path("rooms", room, "jobs", job_name))
        return JobResponse.model_validate(response.json())

    def list_workers(
        self, room: str | None = None, *, limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0
    ) -> Page[WorkerSummary]:
        """List workers: all of them, or those serving jobs visible from ``room``."""
        path = self._path("workers") if room is None else self._path("rooms", room, "workers")
        response = self.http.request("GET", path, params={"limit": limit, "offset": offset})
        return Page[WorkerSummary].model_validate(response.json())

    def list_tasks(
        self,
        room: str,
        *,
        job_name: str | None = None,
        status: TaskStatus | str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        offset: int = 0,
    ) -> Page[TaskResponse]:
        """List the tasks submitted from a room (optionally of one job, in one state)."""
        if job_name is None:
            path = self._path("rooms", room, "tasks")
        else:
            path = self._path("rooms", room, "jobs", job_name, "tasks")
        state = TaskStatus(status).value if status is not None else None
        response = self.http.request(
            "GET", path, params={"status": state, "limit": limit, "offset": offset}
        )
        return Page[TaskResponse].model_validate(response.json())

    # -- worker side ----------------------------------------------------------------------

    def claim(self, max_tasks: int = 1, wait: float | None = None) -> list[ClaimedTask[Any]]:
        """Claim up to ``max_tasks`` pending tasks for this client's worker.

        Args:
            max_tasks: How many tasks to take at most.
            wait: Ask the server to hold the request up to this many seconds until a task
                is available (``Prefer: wait=N``).

        Returns:
            The claimed tasks (possibly none).

        Raises:
            WorkerNotFound: The server no longer knows the worker.
        """
        tasks, _ = self.claim_detailed(max_tasks, wait)
        return tasks

    def claim_detailed(
        self, max_tasks: int = 1, wait: float | None = None, *, retry_transient: bool = True
    ) -> tuple[list[ClaimedTask[Any]], bool]:
        """Like :meth:`claim`, also saying whether the server honoured ``Prefer: wait``.

        ``retry_transient=False`` sends the claim once (the worker loop does its own backoff).
        """
        worker_id = self._require_worker()
        headers: dict[str, str] = {}
        timeout = None
        if wait is not None and wait > 0:
            seconds = max(1, math.ceil(wait))
            headers["Prefer"] = f"wait={seconds}"
            timeout = seconds + _WAIT_SLACK
        response = self.http.request(
            "POST",
            self._path("tasks", "claim"),
            json=self._claim_body(worker_id, max_tasks),
            headers=headers,
            timeout=timeout,
            retry_transient=retry_transient,
        )
        answer = TaskClaimResponse.model_validate(response.json())
        if self.on_provider_reads is not None and answer.provider_reads:
            self.on_provider_reads(answer.provider_reads)
        raw = answer.tasks or ([answer.task] if answer.task is not None else [])
        waited = "preference-applied" in response.headers
        return [self._claimed(t, worker_id) for t in raw], waited

    def _claim_body(self, worker_id: UUID, max_tasks: int) -> dict[str, Any]:
        body: dict[str, Any] = {"worker_id": str(worker_id), "max_tasks": max_tasks}
        if self.on_provider_reads is not None:
            body["providers"] = True
        return body

    def exchange(
        self,
        reports: Sequence[Report],
        claim: int = 0,
        wait: float | None = None,
        *,
        start: bool = True,
    ) -> Exchange:
        """Send reports and claim up to ``claim`` tasks in one request.

        Sent once (the worker loop handles failures): no reports is a claim; one report is
        ``PATCH /tasks/{id}``, several ``PATCH /tasks``, each with ``claim_next`` when
        ``claim`` is above 0. ``wait``: the claim may wait this long for work. ``start``:
        the claimed tasks come back running (False for a server that predates it).

        Raises:
            ProblemError: The request was refused (a single report's problem, or the claim's).
        """
        worker_id = self._require_worker()
        claim_body: dict[str, Any] | None = None
        if claim > 0:
            claim_body = self._claim_body(worker_id, claim)
            if start:
                claim_body["start"] = True
        method, path, body, headers, timeout = request_of(
            list(reports), claim_body, wait, API_PREFIX
        )
        response = self._worker_session().request(
            method,
            path,
            content=encode(body),
            headers=headers,
            timeout=timeout,
            retry_transient=False,
        )
        answer = answer_of(
            list(reports), response.content, response.headers.get("preference-applied", "")
        )
        reads = answer.claim.provider_reads if answer.claim is not None else []
        if self.on_provider_reads is not None and reads:
            self.on_provider_reads(reads)
        return answer

    def claimed_task(self, task: TaskResponse, worker_id: UUID) -> ClaimedTask[Any]:
        """A claimed task of this client's worker, bound to its registered extension."""
        return self._claimed(task, worker_id)

    def update_task(
        self,
        task_id: UUID | str,
        *,
        status: TaskStatus | str | None = None,
        error: str | None = None,
        worker_id: UUID | None = _UNSET,
        progress: float | None = None,
        message: str | None = None,
        result: JsonValue = None,
        retry: bool | None = None,
    ) -> TaskResponse:
        """Update a task (``PATCH /tasks/{id}``): move it forward or report progress.

        Args:
            task_id: The task.
            status: The state to move to; None for a progress-only update.
            error: The failure or cancellation reason.
            worker_id: The worker acting (defaults to this client's worker; None omits it).
            progress: Progress between 0 and 1.
            message: A short status message.
            result: The JSON result (with ``completed``).
            retry: With ``failed``: requeue while attempts remain.

        Returns:
            The task after the update.

        Raises:
            LeaseLost: The worker no longer holds the task.
            InvalidTaskTransition: The task cannot move to ``status``.
        """
        body = self._update_body(
            status=status,
            error=error,
            worker_id=self._worker_id if worker_id is _UNSET else worker_id,
            progress=progress,
            message=message,
            result=result,
            retry=retry,
        )
        response = self.http.request("PATCH", self._path("tasks", str(task_id)), json=body)
        return TaskResponse.model_validate(response.json())

    def task_token(
        self,
        task_id: UUID | str,
        *,
        worker_id: UUID | None = _UNSET,
        identity: str = "submitter",
    ) -> str:
        """A bearer token scoped to a task this client's worker holds (``POST /tasks/{id}/token``).

        The server accepts it only while the task holds its lease under this claim. With
        ``identity="submitter"`` (``@internal`` jobs only) it carries the submitting user's
        rights, with ``"worker"`` this worker's account's.

        Raises:
            LeaseLost: The worker does not hold the task.
            Forbidden: A submitter's token for a job that is not ``@internal``.
        """
        wid = self._worker_id if worker_id is _UNSET else worker_id
        body = {"worker_id": str(wid), "identity": identity}
        response = self.http.request("POST", self._path("tasks", str(task_id), "token"), json=body)
        return str(response.json()["access_token"])

    def update_tasks(
        self,
        items: Sequence[TaskBatchUpdateItem | Mapping[str, Any]],
        *,
        minimal: bool = False,
    ) -> TaskBatchUpdateResponse:
        """Update several tasks in one request (``PATCH /tasks``).

        Args:
            items: One ``{task_id, ...update}`` per task (``worker_id`` defaults to this
                client's worker).
            minimal: Send ``Prefer: return=minimal``: applied outcomes come without the
                task (cheaper for the server when only success matters).

        Returns:
            One outcome per item, in order; refused items carry their problem.
        """
        body: list[dict[str, Any]] = []
        for item in items:
            fields = (
                item.model_dump(exclude_unset=True)
                if isinstance(item, TaskBatchUpdateItem)
                else dict(item)
            )
            task_id = fields.pop("task_id")
            if "worker_id" not in fields and self._worker_id is not None:
                fields["worker_id"] = self._worker_id
            update = self._update_body(**fields)
            body.append({"task_id": str(task_id), **update})
        headers = {"Prefer": "return=minimal"} if minimal else {}
        response = self.http.request("PATCH", self._path("tasks"), json=body, headers=headers)
        return TaskBatchUpdateResponse.model_validate(response.json())

    @staticmethod
    def _update_body(**fields: Any) -> dict[str, Any]:
        given = {k: v for k, v in fields.items() if v is not None}
        return TaskUpdateRequest(**given).model_dump(mode="json", exclude_unset=True)
