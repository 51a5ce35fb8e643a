"""``JobManager``: register extensions, submit tasks, wait for results, run a worker."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload
from uuid import UUID

import httpx
from pydantic import BaseModel

from zndraw_joblib_client._auth import Credentials
from zndraw_joblib_client._http import HeadersHook, HttpSession, RetryPolicy, Sender
from zndraw_joblib_client._lean import LeanSession, proxy_applies, transport_choice
from zndraw_joblib_client._providers import Provider, ProviderReader, ProviderServer
from zndraw_joblib_client._registry import Registration, Registry
from zndraw_joblib_client._tasks_api import TasksApi, api_path
from zndraw_joblib_client._worker import WorkerLoop, is_transient
from zndraw_joblib_client.extension import Extension, category_value, job_full_name
from zndraw_joblib_core import (
    GLOBAL_ROOM,
    JobRegisterRequest,
    JobResponse,
    NotFound,
    ProviderResponse,
    WorkerResponse,
)

__all__ = ["JobManager"]

logger = logging.getLogger("zndraw_joblib_client")

E = TypeVar("E", bound=Extension)
P = ParamSpec("P")
R = TypeVar("R")


class _Delegate(Generic[P, R]):
    """A method of :class:`TasksApi` offered on :class:`JobManager` (same signature, docs)."""

    def __init__(self, method: Callable[Concatenate[TasksApi, P], R]) -> None:
        self._name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, manager: None, owner: type[Any]) -> _Delegate[P, R]: ...

    @overload
    def __get__(self, manager: JobManager, owner: type[Any]) -> Callable[P, R]: ...

    def __get__(
        self, manager: JobManager | None, owner: type[Any]
    ) -> _Delegate[P, R] | Callable[P, R]:
        if manager is None:
            return self
        bound: Callable[P, R] = getattr(manager.tasks, self._name)
        return bound


class JobManager:
    """Client of a zndraw-joblib server: for submitters and for workers.

    No request is sent at import or construction; the first method that needs the server
    sends one (logging in first when e-mail and password are given).

    Args:
        url: The server's base URL (the host app root, e.g. ``http://127.0.0.1:8000``).
        token: A bearer token to send.
        email: Log in with this e-mail (``POST {url}/auth/jwt/login``) when needed.
        password: The password to log in with.
        register: Create the account if logging in reports bad credentials.
        client: A ready ``httpx.Client`` whose ``base_url`` points at the server (instead
            of ``url``); it is not closed by the manager.
        retry: How transient failures are retried.
        sleep: The function used to wait between retries (tests pass a fake).
        timeout: Default request timeout in seconds (for a client built from ``url``).
        auth_prefix: Path of the host's auth routes.
        idempotent_submits: Send a fresh ``Idempotency-Key`` with every submit so that it
            can be retried safely.
        headers: Extra headers for every request: a mapping, or a callable called before
            each request that returns them (e.g. a host's per-request lock token).

    The worker loop's claim-and-report requests and heartbeats go over kept-alive standard
    library connections (less client CPU per task than httpx); every other request goes
    through httpx. ``ZNDRAW_JOBLIB_TRANSPORT=httpx`` sends the worker loop's through httpx
    too, as does a manager given its own ``client`` or one whose httpx would use a proxy.

    Attributes:
        tasks: The task, job and worker requests (:class:`TasksApi`); the manager's
            ``submit``, ``wait``, ``claim``, ``update_task``, ... are its methods.

    Example:
        >>> with JobManager("http://127.0.0.1:8000", token="...") as manager:  # doctest: +SKIP
        ...     manager.register(Greet)
        ...     manager.serve()
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        email: str | None = None,
        password: str | None = None,
        register: bool = False,
        client: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 30.0,
        auth_prefix: str = "/auth",
        idempotent_submits: bool = True,
        headers: HeadersHook | None = None,
    ) -> None:
        if url is None and client is None:
            raise ValueError("JobManager needs a url or an httpx.Client")
        if url is not None and client is not None:
            raise ValueError("give either url or client, not both")
        self._url = url
        self._owns_client = client is None
        self._client = client
        self._timeout = timeout
        self._credentials = Credentials(
            token=token,
            email=email,
            password=password,
            register=register,
            auth_prefix=auth_prefix,
        )
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._headers = headers
        self._session: HttpSession | None = None
        self._worker_session: Sender | None = None
        self._lock = threading.RLock()
        self._worker_id: UUID | None = None
        self._registry = Registry()
        self._loop: WorkerLoop | None = None
        self.tasks = TasksApi(
            lambda: self.http,
            worker_session=lambda: self.worker_http,
            worker_id=lambda: self._worker_id,
            lookup=self._registry.get,
            sleep=sleep,
            idempotent_submits=idempotent_submits,
        )
        self.providers = ProviderServer(lambda: self.http, self.ensure_worker)
        self._reader = ProviderReader(lambda: self.http)

    # -- requests about tasks, jobs and workers (see TasksApi) ----------------------------

    submit = _Delegate(TasksApi.submit)
    submit_many = _Delegate(TasksApi.submit_many)
    get_task = _Delegate(TasksApi.get_task)
    wait = _Delegate(TasksApi.wait)
    cancel = _Delegate(TasksApi.cancel)
    list_jobs = _Delegate(TasksApi.list_jobs)
    get_job = _Delegate(TasksApi.get_job)
    list_workers = _Delegate(TasksApi.list_workers)
    list_tasks = _Delegate(TasksApi.list_tasks)
    claim = _Delegate(TasksApi.claim)
    claim_detailed = _Delegate(TasksApi.claim_detailed)
    update_task = _Delegate(TasksApi.update_task)
    update_tasks = _Delegate(TasksApi.update_tasks)
    exchange = _Delegate(TasksApi.exchange)
    claimed_task = _Delegate(TasksApi.claimed_task)

    @property
    def idempotent_submits(self) -> bool:
        """Whether submits send a fresh ``Idempotency-Key`` (so they can be retried)."""
        return self.tasks.idempotent_submits

    @idempotent_submits.setter
    def idempotent_submits(self, value: bool) -> None:
        self.tasks.idempotent_submits = value

    @property
    def retry_policy(self) -> RetryPolicy:
        """How transient failures are retried (the worker loop backs off with it too)."""
        return self._retry

    # -- plumbing -------------------------------------------------------------------------

    @property
    def http(self) -> HttpSession:
        """The request sender (built on first use)."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    if self._client is None:
                        assert self._url is not None
                        self._client = httpx.Client(
                            base_url=self._url, timeout=httpx.Timeout(self._timeout)
                        )
                    self._session = HttpSession(
                        self._client,
                        token=self._credentials.current,
                        on_unauthorized=self._credentials.refresh,
                        retry=self._retry,
                        sleep=self._sleep,
                        headers=self._headers,
                    )
                    self._credentials.http = self._session
        return self._session

    @property
    def worker_http(self) -> Sender:
        """The worker loop's request sender: the lean transport, or :attr:`http` (see above).

        Raises:
            ValueError: ``ZNDRAW_JOBLIB_TRANSPORT`` is neither ``lean`` nor ``httpx``.
        """
        if self._worker_session is None:
            http = self.http
            with self._lock:
                if self._worker_session is None:
                    self._worker_session = self._lean_session() or http
        return self._worker_session

    def _lean_session(self) -> LeanSession | None:
        if transport_choice() != "lean" or not self._owns_client or self._url is None:
            return None
        assert self._client is not None
        if proxy_applies(self._client, self._url):
            logger.debug("a proxy applies to %s: the worker loop uses httpx", self._url)
            return None
        return LeanSession(
            self._url,
            timeout=self._timeout,
            token=self._credentials.current,
            on_unauthorized=self._credentials.refresh,
            retry=self._retry,
            sleep=self._sleep,
            headers=self._headers,
        )

    def login(self) -> str:
        """Log in with the configured e-mail and password and return the access token.

        Raises:
            LoginFailed: The credentials were refused.
            ValueError: No e-mail and password were configured.
        """
        if not self._credentials.can_login:
            raise ValueError("login needs email and password")
        _ = self.http
        self._credentials.token = self._credentials.login()
        return self._credentials.token

    def close(self) -> None:
        """Close the HTTP client (and the worker loop's connections) if the manager made them."""
        worker, self._worker_session = self._worker_session, None
        if isinstance(worker, LeanSession):
            worker.close()
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
            self._session = None

    # -- workers and registration ---------------------------------------------------------

    @property
    def worker_id(self) -> UUID | None:
        """The id of this client's worker, or None before one was created."""
        return self._worker_id

    def create_worker(self) -> WorkerResponse:
        """Create a new worker for this client (``POST /workers``) and use it from now on.

        Returns:
            The new worker.
        """
        response = self.http.request("POST", api_path("workers"), idempotent=True)
        worker = WorkerResponse.model_validate(response.json())
        with self._lock:
            self._worker_id = worker.id
        logger.info("created worker %s", worker.id)
        return worker

    def ensure_worker(self) -> UUID:
        """Return this client's worker id, creating the worker on first use."""
        with self._lock:
            if self._worker_id is None:
                self.create_worker()
            assert self._worker_id is not None
            return self._worker_id

    @overload
    def register(
        self,
        cls: type[Extension],
        *,
        room: str = ...,
        run_kwargs: Mapping[str, Any] | None = ...,
    ) -> JobResponse: ...

    @overload
    def register(
        self,
        cls: None = None,
        *,
        room: str = ...,
        run_kwargs: Mapping[str, Any] | None = ...,
    ) -> Callable[[type[E]], type[E]]: ...

    def register(
        self,
        cls: type[Extension] | None = None,
        *,
        room: str = GLOBAL_ROOM,
        run_kwargs: Mapping[str, Any] | None = None,
    ) -> JobResponse | Callable[[type[E]], type[E]]:
        """Register an extension class as a job served by this client's worker.

        Every registration reuses the one worker of this client (created on first use).
        Called without a class it returns a decorator: ``@manager.register(room="r")``.

        Args:
            cls: The extension class.
            room: The room of the job (``@global`` needs a superuser).
            run_kwargs: Keyword arguments the worker loop passes to this job's ``run``
                (objects built once per process, such as a loaded model); they are also
                :attr:`ClaimedTask.run_kwargs` of its tasks. They win over the loop's own
                ``run_kwargs`` option. Registering again replaces them.

        Returns:
            The job (201 new or reactivated, 200 already registered), or a decorator that
            registers and returns the class.
        """
        if cls is None:

            def decorator(ext: type[E]) -> type[E]:
                self.register(ext, room=room, run_kwargs=run_kwargs)
                return ext

            return decorator
        return self._register(Registration(cls, room, dict(run_kwargs or {})))

    def _register(self, registration: Registration) -> JobResponse:
        cls, room = registration.cls, registration.room
        category = category_value(cls)  # before creating a worker for nothing
        worker_id = self.ensure_worker()
        body = JobRegisterRequest(
            category=category,
            name=cls.__name__,
            schema_=cls.model_json_schema(),
            worker_id=worker_id,
        ).model_dump(mode="json", by_alias=True)
        response = self.http.request("PUT", api_path("rooms", room, "jobs"), json=body)
        job = JobResponse.model_validate(response.json())
        with self._lock:
            self._registry.add(job.full_name, registration)
            if job.worker_id is not None:
                self._worker_id = job.worker_id
        if response.status_code == 200:
            logger.debug("job %s was already registered", job.full_name)
        else:
            logger.info("registered job %s", job.full_name)
        return job

    def heartbeat(self) -> WorkerResponse:
        """Tell the server this client's worker is alive (``PATCH /workers/{id}``).

        Returns:
            The worker; ``cancel_requested`` lists its tasks that should stop.

        Raises:
            WorkerNotFound: The server no longer knows the worker.
        """
        worker_id = self._require_worker()
        response = self.worker_http.request(
            "PATCH", api_path("workers", str(worker_id)), idempotent=True
        )
        return WorkerResponse.model_validate_json(response.content)

    def disconnect(self, *, retry_transient: bool = True) -> None:
        """Delete this client's worker (``DELETE /workers/{id}``) and forget registrations.

        The server releases the worker's in-flight tasks. A worker the server no longer knows
        is not an error.

        Args:
            retry_transient: False to send the request only once.
        """
        with self._lock:
            worker_id, self._worker_id = self._worker_id, None
            self._registry.clear()
            self.providers.forget()
            self.tasks.on_provider_reads = None
        if worker_id is None:
            return
        try:
            self.http.request(
                "DELETE", api_path("workers", str(worker_id)), retry_transient=retry_transient
            )
        except NotFound:
            logger.debug("worker %s was already gone", worker_id)
        else:
            logger.info("disconnected worker %s", worker_id)

    def recover_worker(self, lost: UUID) -> UUID:
        """Replace a worker the server lost: create a new one and register every job again.

        Safe to call from several threads: only the first call for ``lost`` does the work.

        Args:
            lost: The worker id the server answered 404 for.

        Returns:
            The current worker id.
        """
        with self._lock:
            if self._worker_id is not None and self._worker_id != lost:
                return self._worker_id
            logger.warning("server lost worker %s; creating a new one", lost)
            self._worker_id = None
            registrations = self._registry.values()
            self.create_worker()
            for registration in registrations:
                self._register(registration)
            self.providers.register_again()
            assert self._worker_id is not None
            return self._worker_id

    def _require_worker(self) -> UUID:
        worker_id = self._worker_id
        if worker_id is None:
            raise RuntimeError("no worker yet: call create_worker() or register() first")
        return worker_id

    # -- providers ------------------------------------------------------------------------

    def register_provider(
        self, cls: type[Provider], *, name: str, handler: Any = None, room: str = GLOBAL_ROOM
    ) -> ProviderResponse:
        """Register a provider served by this client's worker (see docs/providers.md).

        Its reads arrive with the worker loop's claims (:meth:`serve` or :meth:`start`),
        run ``cls(**params).read(handler)`` in a thread and upload the answer.

        Raises:
            Forbidden: ``@global`` without being a superuser, or somebody else's provider.
        """
        provider = self.providers.register(cls, name, handler, room)
        self.tasks.on_provider_reads = self.providers.handle
        return provider

    def unregister_provider(self, full_name: str) -> None:
        """Delete a provider this client registered."""
        self.providers.unregister(full_name)
        if not self.providers:
            self.tasks.on_provider_reads = None

    def read_provider(
        self,
        room: str,
        full_name: str,
        params: Mapping[str, Any] | BaseModel | None = None,
        *,
        wait: float = 30.0,
        timeout: float | None = None,
    ) -> Any:
        """Read a provider from ``room``: decoded JSON, or bytes for binary providers.

        Raises:
            ProviderTimeoutError: No answer within ``wait`` (or ``timeout``) seconds.
            ProblemError: The read failed (e.g. ``provider-read-failed``) or was refused.
        """
        return self._reader.read(room, full_name, params, wait=wait, timeout=timeout)

    # -- the worker loop ------------------------------------------------------------------

    def serve(self, **options: Any) -> None:
        """Run the worker loop in this thread until stopped (SIGINT/SIGTERM or :meth:`stop`).

        Options are those of :class:`~zndraw_joblib_client.WorkerLoop`:
        ``concurrency``, ``claim_wait``, ``poll_interval``, ``heartbeat_interval``,
        ``execute``, ``run_kwargs``, ``install_signal_handlers``, ...

        On return the worker is deleted on the server.

        Raises:
            Unauthorized: The credentials were refused (the loop stops).
            Forbidden: The server refused the worker (the loop stops).
        """
        loop = self._new_loop(options)
        try:
            loop.run()
        except BaseException:
            self._loop = None
            self._disconnect_quietly()
            raise
        self._loop = None
        self.disconnect()

    def _disconnect_quietly(self) -> None:
        """Delete the worker after the loop failed; the loop's error stays the one raised."""
        try:
            self.disconnect(retry_transient=False)
        except Exception as exc:
            reason = "server unreachable" if is_transient(exc) else type(exc).__name__
            logger.info("could not delete the worker (%s); the server will time it out", reason)

    run_worker = serve

    def start(self, **options: Any) -> None:
        """Start the worker loop in background threads and return (see :meth:`serve`)."""
        self._new_loop(options).start()

    def stop(self, timeout: float | None = None, *, force: bool = False) -> None:
        """Stop a loop started with :meth:`start`: finish the running tasks, stop claiming.

        Args:
            timeout: Longest wait in seconds for the running tasks (None for no limit).
            force: Release running tasks at once (reported ``failed`` with retry).

        Raises:
            Exception: The error that stopped the loop, if one did.
        """
        loop = self._loop
        if loop is None:
            return
        try:
            loop.stop(force=force)
            loop.join(timeout)
            loop.raise_error()
        finally:
            self._loop = None

    def _new_loop(self, options: dict[str, Any]) -> WorkerLoop:
        if self._loop is not None and self._loop.alive:
            raise RuntimeError("the worker loop is already running")
        self._loop = WorkerLoop(self, **options)
        return self._loop

    # -- protocols ------------------------------------------------------------------------

    def __enter__(self) -> JobManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._loop is not None:
                self._loop.stop()
                self._loop.join()
                self._loop = None
            self.disconnect()
        finally:
            self.close()

    def __contains__(self, full_name: object) -> bool:
        return full_name in self._registry

    def __getitem__(self, full_name: str) -> type[Extension]:
        entry = self._registry.get(full_name)
        if entry is None:
            raise KeyError(full_name)
        return entry.cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def full_name(self, cls: type[Extension], room: str = GLOBAL_ROOM) -> str:
        """Return the full job name of ``cls`` registered in ``room``."""
        return job_full_name(cls, room)
