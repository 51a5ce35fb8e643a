"""Providers on the client: the ``Provider`` base class, serving reads, reading.

A worker that registered providers asks its claims for their reads too
(``providers: true``); each read in a claim answer runs in a small thread pool and its
answer (or a problem, with ``X-Result-Status: error``) is uploaded to
``POST /providers/{id}/results``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from zndraw_joblib_client._http import HttpSession
from zndraw_joblib_client._tasks_api import api_path
from zndraw_joblib_core import (
    GLOBAL_ROOM,
    REQUEST_HASH_HEADER,
    RESULT_STATUS_HEADER,
    ProviderReadFailed,
    ProviderReadRequest,
    ProviderRegisterRequest,
    ProviderResponse,
    ProviderTimeout,
    build_job_name,
    decoded_params,
)

__all__ = [
    "Provider",
    "ProviderReader",
    "ProviderServer",
    "ProviderTimeoutError",
    "provider_name",
]

logger = logging.getLogger("zndraw_joblib_client")

ProviderTimeoutError = ProviderTimeout
"""Raised by :meth:`ProviderReader.read` when no answer came in time (the 504 problem)."""


class Provider(BaseModel):
    """Base of a provider's read parameters; subclass it with fields and ``read``.

    The fields are the read's parameters (their JSON Schema is registered); ``category``
    groups providers, ``content_type`` is the media type of the answers. ``read`` gets
    the handler given at registration (a filesystem, a trajectory, ...) and returns
    JSON-able data, or ``bytes`` for a binary ``content_type``.

    Example::

        class Greeting(Provider):
            category: ClassVar[str] = "demo"
            name: str

            def read(self, handler: Any) -> Any:
                return {"greeting": f"{handler}, {self.name}!"}
    """

    category: ClassVar[str]
    content_type: ClassVar[str] = "application/json"

    def read(self, handler: Any) -> Any:
        """Answer this read using ``handler``; override it."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Served:
    cls: type[Provider]
    handler: Any
    full_name: str
    name: str
    room: str


def _params_of(cls: type[Provider], params: Mapping[str, str]) -> Provider:
    """The read's parameters as the model: as sent, else with values read as JSON."""
    try:
        return cls.model_validate(dict(params))
    except ValidationError:
        return cls.model_validate(decoded_params(dict(params)))


class ProviderServer:
    """The providers one client serves, and the threads that answer their reads.

    Args:
        session: Returns the request sender.
        ensure_worker: Returns the client's worker id (creating the worker if needed).
        threads: How many reads run at once.
    """

    def __init__(
        self,
        session: Callable[[], HttpSession],
        ensure_worker: Callable[[], UUID],
        threads: int = 4,
    ) -> None:
        self._session = session
        self._ensure_worker = ensure_worker
        self._threads = threads
        self._served: dict[UUID, _Served] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __bool__(self) -> bool:
        return bool(self._served)

    def register(
        self, cls: type[Provider], name: str, handler: Any, room: str = GLOBAL_ROOM
    ) -> ProviderResponse:
        """Register ``cls`` as provider ``name`` in ``room``, served with ``handler``."""
        body = ProviderRegisterRequest(
            category=cls.category,
            name=name,
            schema_=cls.model_json_schema(),
            content_type=cls.content_type,
            worker_id=self._ensure_worker(),
        )
        response = self._session().request(
            "PUT",
            api_path("rooms", room, "providers"),
            json=body.model_dump(mode="json", by_alias=True),
        )
        provider = ProviderResponse.model_validate(response.json())
        with self._lock:
            self._served[provider.id] = _Served(cls, handler, provider.full_name, name, room)
        return provider

    def register_again(self) -> None:
        """Register every provider again (for the client's new worker)."""
        with self._lock:
            served, self._served = list(self._served.values()), {}
        for entry in served:
            self.register(entry.cls, entry.name, entry.handler, entry.room)

    def forget(self) -> None:
        """Forget every provider (the worker, and with it the providers, was deleted)."""
        with self._lock:
            self._served.clear()
        self.close()

    def unregister(self, full_name: str) -> None:
        """Delete a provider this client registered."""
        with self._lock:
            found = [pid for pid, s in self._served.items() if s.full_name == full_name]
        for provider_id in found:
            self._session().request("DELETE", api_path("providers", str(provider_id)))
            with self._lock:
                self._served.pop(provider_id, None)

    def handle(self, reads: list[ProviderReadRequest]) -> None:
        """Start answering the reads of a claim answer (in the pool; returns at once)."""
        if not reads:
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, "zndraw-joblib-provider")
            pool = self._pool
        for read in reads:
            pool.submit(self.answer, read)

    def answer(self, read: ProviderReadRequest) -> None:
        """Run one read and upload its answer (or its failure as a problem)."""
        served = self._served.get(read.provider_id)
        headers = {REQUEST_HASH_HEADER: read.request_hash}
        if served is None:
            return  # unregistered meanwhile; the server re-dispatches or forgets it
        try:
            data = _params_of(served.cls, read.params).read(served.handler)
            if isinstance(data, bytes | bytearray | memoryview):
                body = bytes(data)
            else:
                body = json.dumps(data).encode()
        except Exception as exc:
            logger.warning("provider %s failed: %s", served.full_name, exc)
            problem = ProviderReadFailed(f"{type(exc).__name__}: {exc}"[:2000]).to_problem()
            body = problem.model_dump_json().encode()
            headers[RESULT_STATUS_HEADER] = "error"
        try:
            self._session().request(
                "POST",
                api_path("providers", str(read.provider_id), "results"),
                content=body,
                headers=headers,
            )
        except Exception as exc:  # the reader times out and asks again
            logger.warning("could not upload the answer of %s: %s", served.full_name, exc)

    def close(self) -> None:
        """Stop the threads (reads running finish)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


class ProviderReader:
    """Reads providers: ``GET /rooms/{room}/providers/{full_name}?params``."""

    def __init__(self, session: Callable[[], HttpSession]) -> None:
        self._session = session

    def read(
        self,
        room: str,
        full_name: str,
        params: Mapping[str, Any] | BaseModel | None = None,
        *,
        wait: float = 30.0,
        timeout: float | None = None,
    ) -> Any:
        """Read a provider: decoded JSON for JSON providers, else the raw bytes.

        Args:
            room: The room read from.
            full_name: The provider's full name (``{room}:{category}:{name}``).
            params: The parameters (a mapping, or the provider's model); non-string values
                are sent as JSON.
            wait: Seconds each request may be held by the server.
            timeout: Give up after this many seconds in all (None: after one 504).

        Raises:
            ProviderTimeoutError: No answer in time.
            ProblemError: The read failed (its problem, e.g. ``provider-read-failed``).
        """
        query = _query(params)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                response = self._session().request(
                    "GET",
                    api_path("rooms", room, "providers", full_name),
                    params=query,
                    headers={"Prefer": f"wait={max(1, round(wait))}"},
                    timeout=wait + 10,
                    retry_transient=False,
                )
            except ProviderTimeout:
                if deadline is None or time.monotonic() >= deadline:
                    raise
                continue
            kind = response.headers.get("content-type", "")
            return response.json() if "json" in kind else response.content


def _query(params: Mapping[str, Any] | BaseModel | None) -> dict[str, str]:
    if params is None:
        return {}
    if isinstance(params, BaseModel):
        params = params.model_dump(mode="json")
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}


def provider_name(cls: type[Provider], name: str, room: str = GLOBAL_ROOM) -> str:
    """The full name a registration of ``cls`` as ``name`` in ``room`` gets."""
    return build_job_name(room, cls.category, name)
