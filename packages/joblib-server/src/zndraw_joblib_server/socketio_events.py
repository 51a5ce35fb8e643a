"""Socket.IO events as the predecessor (zndraw-joblib 0.1.x) emitted them: an event sink.

A host with a Socket.IO server hands :class:`SocketIOEvents` to the queue as its event
sink; after every commit it emits, to the room ``room:{room_id}``:

* ``task_status_event`` ``{id, name, room_id, status, created_at, started_at,
  completed_at, queue_position, worker_id, error}``: a task changed (``queue_position``
  is set on a submit's events only, see ``docs/hosting.md``);
* ``jobs_invalidate`` ``{}``: the room's job list changed (``@global`` changes go to
  ``room:@global``);

and ``task_available`` ``{job_name, room_id, task_id}`` to ``jobs:{job_name}`` (for
0.1.x workers listening there; this queue's workers long-poll instead). Provider events go
to ``room:{room_id}`` too: ``providers_invalidate`` ``{}`` when a room's providers changed,
and ``provider_result_ready`` ``{provider_name, request_hash}`` when an answer is cached
(also callable directly: :meth:`SocketIOEvents.providers_invalidate`,
:meth:`SocketIOEvents.provider_result_ready`).

Events are deduplicated per commit (one ``task_status_event`` per task, carrying its last
state; one ``jobs_invalidate`` per room) and emitted in order by one background task per
event loop: the request that committed never waits for Socket.IO, and a slow or failing
Socket.IO server only delays (or, past the queue's bound, drops) events, logged.

Across processes: give each process's ``socketio.AsyncServer`` a message queue
(``client_manager=socketio.AsyncRedisManager(url)``); an emit in one process then reaches
clients connected to any. python-socketio is the ``socketio`` extra
(``pip install "zndraw-joblib-server[socketio]"``); this module imports it only in
:func:`socketio_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from zndraw_joblib_core import (
    Event,
    JobsChanged,
    ProviderResultReady,
    ProvidersChanged,
    TaskAvailable,
    TaskStatusChanged,
)

__all__ = [
    "JOBS_INVALIDATE",
    "PROVIDERS_INVALIDATE",
    "PROVIDER_RESULT_READY",
    "TASK_AVAILABLE",
    "TASK_STATUS_EVENT",
    "Emission",
    "SocketIOEvents",
    "emissions_for",
    "job_room",
    "room_of",
    "socketio_server",
]

logger = logging.getLogger("zndraw_joblib_server")

TASK_STATUS_EVENT = "task_status_event"
"""A task changed (to ``room:{room_id}``)."""
JOBS_INVALIDATE = "jobs_invalidate"
"""A room's job list changed (to ``room:{room_id}``)."""
TASK_AVAILABLE = "task_available"
"""A task became claimable (to ``jobs:{job_name}``)."""
PROVIDERS_INVALIDATE = "providers_invalidate"
"""A room's provider list changed (to ``room:{room_id}``)."""
PROVIDER_RESULT_READY = "provider_result_ready"
"""A provider's result is ready (to ``room:{room_id}``)."""


def room_of(room_id: str) -> str:
    """The Socket.IO room of a queue room: ``room:{room_id}`` (frontends join it)."""
    return f"room:{room_id}"


def job_room(job_name: str) -> str:
    """The Socket.IO room of a job's workers: ``jobs:{job_name}``."""
    return f"jobs:{job_name}"


class Emission(NamedTuple):
    """One Socket.IO emit: the event's name, its JSON data, the room it goes to."""

    event: str
    data: dict[str, Any]
    room: str


def _task_status(event: TaskStatusChanged) -> Emission:
    data = event.model_dump(mode="json")
    return Emission(
        TASK_STATUS_EVENT,
        {
            "id": data["task_id"],
            "name": event.job_name,
            "room_id": event.room_id,
            "status": data["status"],
            "created_at": data["created_at"],
            "started_at": data["started_at"],
            "completed_at": data["completed_at"],
            "queue_position": event.queue_position,
            "worker_id": data["worker_id"],
            "error": event.error,
        },
        room_of(event.room_id),
    )


def _result_ready(room_id: str, provider_name: str, request_hash: str) -> Emission:
    data = {"provider_name": provider_name, "request_hash": request_hash}
    return Emission(PROVIDER_RESULT_READY, data, room_of(room_id))


def emissions_for(events: Sequence[Event], *, task_available: bool = True) -> list[Emission]:
    """The emits for one commit's events, deduplicated, in the order they first occurred.

    Args:
        events: The events of one commit.
        task_available: Also emit ``task_available`` to the job's workers' room.

    Returns:
        One ``task_status_event`` per task (its last state in ``events``), one
        ``jobs_invalidate`` per room, one ``task_available`` per task.
    """
    found: dict[tuple[str, str], Emission] = {}
    for event in events:
        if isinstance(event, TaskStatusChanged):
            found[(TASK_STATUS_EVENT, str(event.task_id))] = _task_status(event)
        elif isinstance(event, JobsChanged | ProvidersChanged):
            name = JOBS_INVALIDATE if isinstance(event, JobsChanged) else PROVIDERS_INVALIDATE
            found[(name, event.room_id)] = Emission(name, {}, room_of(event.room_id))
        elif isinstance(event, ProviderResultReady):
            key = (PROVIDER_RESULT_READY, f"{event.provider_name}\n{event.request_hash}")
            found[key] = _result_ready(event.room_id, event.provider_name, event.request_hash)
        elif isinstance(event, TaskAvailable) and task_available:
            task_id = str(event.task_id)
            data = {"job_name": event.job_name, "room_id": event.room_id, "task_id": task_id}
            found[(TASK_AVAILABLE, task_id)] = Emission(
                TASK_AVAILABLE, data, job_room(event.job_name)
            )
    return list(found.values())


class SocketIOEvents:
    """An event sink emitting the predecessor's Socket.IO events, in the background.

    Example::

        sio = socketio_server(redis_url="redis://127.0.0.1:6379/0")
        queue = JobQueue(event_sink=SocketIOEvents(sio))

    Args:
        server: What emits: a ``socketio.AsyncServer`` (with a Redis client manager when
            the host runs several processes), or a write-only
            ``socketio.AsyncRedisManager`` in a process without a Socket.IO server.
            Anything with ``async emit(event, data, room=...)`` works.
        task_available: Also emit ``task_available`` to ``jobs:{job_name}``.
        max_pending: Emits waiting at most; beyond that the oldest are dropped (logged).
        emit_timeout_seconds: One emit that takes longer is given up (logged).
    """

    def __init__(
        self,
        server: Any,
        *,
        task_available: bool = True,
        max_pending: int = 10_000,
        emit_timeout_seconds: float = 10.0,
    ) -> None:
        self.server = server
        self.task_available = task_available
        self.max_pending = max_pending
        self.emit_timeout_seconds = emit_timeout_seconds
        self.dropped = 0
        """Emits dropped because too many were waiting."""
        self._queue: asyncio.Queue[Emission] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, events: Sequence[Event]) -> None:
        """Schedule the emits of one commit's events (returns at once)."""
        for emission in emissions_for(events, task_available=self.task_available):
            self.schedule(emission)

    async def providers_invalidate(self, room_id: str) -> None:
        """Schedule ``providers_invalidate`` ``{}`` to ``room:{room_id}``."""
        self.schedule(Emission(PROVIDERS_INVALIDATE, {}, room_of(room_id)))

    async def provider_result_ready(
        self, room_id: str, provider_name: str, request_hash: str
    ) -> None:
        """Schedule ``provider_result_ready`` ``{provider_name, request_hash}`` to the room."""
        self.schedule(_result_ready(room_id, provider_name, request_hash))

    def schedule(self, emission: Emission) -> None:
        """Queue one emit for the background task (started on first use in this loop)."""
        queue = self._ensure_worker()
        if queue.qsize() >= self.max_pending:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
                queue.task_done()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("socket.io emits are behind: %d dropped so far", self.dropped)
        queue.put_nowait(emission)

    async def drain(self) -> None:
        """Wait until every scheduled emit was made (or given up)."""
        if self._queue is not None and self._loop is asyncio.get_running_loop():
            await self._queue.join()

    async def close(self) -> None:
        """Make the scheduled emits, then stop the background task."""
        await self.drain()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._queue = None

    def _ensure_worker(self) -> asyncio.Queue[Emission]:
        loop = asyncio.get_running_loop()
        if (
            self._queue is None
            or self._loop is not loop
            or self._worker is None
            or self._worker.done()
        ):
            # A new loop (tests, a restarted app): start over there.
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name="zndraw-joblib-socketio")
        return self._queue

    async def _run(self, queue: asyncio.Queue[Emission]) -> None:
        while True:
            emission = await queue.get()
            try:
                await asyncio.wait_for(
                    self.server.emit(emission.event, emission.data, room=emission.room),
                    self.emit_timeout_seconds,
                )
            except Exception as exc:
                logger.warning(
                    "socket.io emit %s to %s failed: %s", emission.event, emission.room, exc
                )
            finally:
                queue.task_done()


def socketio_server(
    redis_url: str | None = None, *, channel: str = "socketio", **kwargs: Any
) -> Any:
    """A ``socketio.AsyncServer`` for ASGI, sharing emits across processes through Redis.

    Args:
        redis_url: The Redis message queue (``socketio.AsyncRedisManager``); None for a
            single process.
        channel: The Redis channel (every process of one app uses the same).
        **kwargs: Passed to ``socketio.AsyncServer`` (e.g. ``cors_allowed_origins``).

    Raises:
        ImportError: python-socketio is not installed (the ``socketio`` extra).
    """
    try:
        import socketio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'the Socket.IO adapter needs python-socketio: pip install "zndraw-joblib-server'
            '[socketio]"'
        ) from exc
    if redis_url is not None:
        kwargs.setdefault("client_manager", socketio.AsyncRedisManager(redis_url, channel=channel))
    kwargs.setdefault("async_mode", "asgi")
    return socketio.AsyncServer(**kwargs)
