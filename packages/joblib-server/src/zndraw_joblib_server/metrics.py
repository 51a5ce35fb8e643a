"""Prometheus metrics of one job queue, served as ``GET /metrics``.

:class:`QueueMetrics` keeps its own :class:`~prometheus_client.CollectorRegistry` (never the
global default one), so two apps in one process count separately. Counters are fed by the
queue's event sink after commit (no work inside the transactions), latencies by an ASGI
middleware, database errors where the problem handlers receive them, and the queue's state
(depth, oldest pending task, live workers, waiting long-polls) is read from the database
when scraped.

Labels never carry task or user ids; job names are capped (``max_job_labels``, later jobs
count under ``job="other"``).

A host turns them on explicitly (the reference app does so unless ``metrics`` is off)::

    queue = JobQueue(settings)
    metrics = QueueMetrics.attach(queue)   # before queue.include_in(app)
    queue.include_in(app)
    metrics.include_in(app, token="a-long-random-token")
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from zndraw_joblib_core import (
    API_PREFIX,
    Event,
    TaskAvailable,
    TaskStatus,
    TaskStatusChanged,
    Unauthorized,
)
from zndraw_joblib_server.errors import database_errors, problem_response
from zndraw_joblib_server.models import Job, Task, Worker
from zndraw_joblib_server.services.liveness import stale_cutoff

if TYPE_CHECKING:
    from zndraw_joblib_server.queue import JobQueue
    from zndraw_joblib_server.storage import EventSink
    from zndraw_joblib_server.sweeper import SweepReport

__all__ = ["QueueMetrics", "fan_out"]

logger = logging.getLogger("zndraw_joblib_server")

OTHER = "other"
"""The job label of jobs beyond the cap."""

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_WAKE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
_CLAIM_PATH = f"{API_PREFIX}/tasks/claim"
_MAX_CACHED = 10_000  # counter children remembered by (job name, event)


def fan_out(*sinks: EventSink | None) -> EventSink | None:
    """One event sink handing every batch of events to each of ``sinks`` in turn.

    None entries are skipped; with a single sink left, that sink itself is returned.
    """
    real = [s for s in sinks if s is not None]
    if len(real) <= 1:
        return real[0] if real else None

    async def sink(events: Sequence[Event]) -> None:
        for each in real:
            await each(events)

    return sink


class QueueMetrics:
    """The Prometheus metrics of one :class:`~zndraw_joblib_server.JobQueue`.

    Args:
        queue: The queue measured (its engine, database and settings).
        max_job_labels: Most distinct ``job`` label values; further jobs count as ``other``.
        max_tracked_tasks: Most submitted tasks remembered for the wake-up latency (the
            oldest are forgotten first).

    Attributes:
        registry: This queue's own registry.
    """

    def __init__(
        self, queue: JobQueue, *, max_job_labels: int = 200, max_tracked_tasks: int = 10_000
    ) -> None:
        self.queue = queue
        self.max_job_labels = max_job_labels
        self._jobs: set[str] = set()
        self._available: OrderedDict[Any, float] = OrderedDict()
        self._max_tracked = max_tracked_tasks
        self._children: dict[tuple[str, str], Any] = {}
        self.registry = r = CollectorRegistry()
        self.tasks = Counter(
            "zndraw_joblib_tasks",
            "Task transitions by job: submitted, claimed, completed, failed, cancelled, requeued.",
            ["job", "event"],
            registry=r,
        )
        self.claim_seconds = Histogram(
            "zndraw_joblib_claim_seconds",
            "Duration of claim requests (long-poll waits included).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.wakeup_seconds = Histogram(
            "zndraw_joblib_wakeup_seconds",
            "From a task's submit to its first claim, for tasks submitted to this process.",
            buckets=_WAKE_BUCKETS,
            registry=r,
        )
        self.database_errors = Counter(
            "zndraw_joblib_database_errors",
            "Database errors met by requests (answered 503, or 500).",
            registry=r,
        )
        self.sweeper_actions = Counter(
            "zndraw_joblib_sweeper_actions",
            "What the sweeper changed, by action.",
            ["action"],
            registry=r,
        )
        # The queue's state as of the last scrape (set by it).
        self.queue_depth = Gauge(
            "zndraw_joblib_queue_depth", "Pending tasks by job.", ["job"], registry=r
        )
        self.oldest_pending = Gauge(
            "zndraw_joblib_oldest_pending_seconds",
            "Age of the oldest pending task by job.",
            ["job"],
            registry=r,
        )
        self.workers_live = Gauge(
            "zndraw_joblib_workers_live",
            "Workers with a heartbeat within the timeout.",
            registry=r,
        )
        self.long_polls_waiting = Gauge(
            "zndraw_joblib_long_polls_waiting",
            "Claims and task reads waiting in this process.",
            registry=r,
        )

    @classmethod
    def attach(cls, queue: JobQueue, **kwargs: Any) -> QueueMetrics:
        """Build the metrics of ``queue`` and add their sink to the queue's event sink.

        Call it before :meth:`JobQueue.include_in <zndraw_joblib_server.JobQueue.include_in>`
        (which publishes the sink to the routes) and before the queue starts (the sweeper).

        Args:
            queue: The queue to measure.
            **kwargs: Passed to :class:`QueueMetrics`.
        """
        metrics = cls(queue, **kwargs)
        queue.event_sink = fan_out(queue.event_sink, metrics.sink)
        queue.sweep_observers.append(metrics.observe_sweep)
        return metrics

    def job_label(self, name: str) -> str:
        """``name``, or ``other`` once ``max_job_labels`` distinct jobs were seen."""
        if name in self._jobs:
            return name
        if len(self._jobs) >= self.max_job_labels:
            return OTHER
        self._jobs.add(name)
        return name

    async def sink(self, events: Sequence[Event]) -> None:
        """Count committed task transitions (an :data:`~.storage.EventSink`).

        A batch is counted first and each counter bumped once (batches of submits and
        claims hand over hundreds of events at a time).
        """
        now = time.monotonic()
        counts: dict[tuple[str, str], int] = {}
        for ev in events:
            if isinstance(ev, TaskAvailable):
                key = (ev.job_name, "submitted")
                self._available[ev.task_id] = now
            elif isinstance(ev, TaskStatusChanged):
                name = _TRANSITIONS.get(ev.status)
                if name is None or (ev.status is TaskStatus.PENDING and ev.attempt == 0):
                    continue  # running updates; a submit (counted by its TaskAvailable)
                key = (ev.job_name, name)
                if name == "claimed":
                    started = self._available.pop(ev.task_id, None)
                    if started is not None:
                        self.wakeup_seconds.observe(now - started)
            else:
                continue
            counts[key] = counts.get(key, 0) + 1
        while len(self._available) > self._max_tracked:
            self._available.popitem(last=False)
        for key, count in counts.items():
            child = self._children.get(key)
            if child is None:
                child = self.tasks.labels(self.job_label(key[0]), key[1])
                if len(self._children) < _MAX_CACHED:
                    self._children[key] = child
            child.inc(count)

    def observe_sweep(self, report: SweepReport) -> None:
        """Count what a sweeper pass changed."""
        for action, count in report.counts().items():
            if count:
                self.sweeper_actions.labels(action).inc(count)

    def include_in(
        self, app: FastAPI, *, token: str | None = None, path: str = "/metrics"
    ) -> None:
        """Serve ``GET path``, time claims with a middleware, count database errors.

        The queue answers a database error in one place (its problem handler, on both
        request paths and whoever installed the handlers), which tells the observers in
        ``app.state.joblib_database_error_observers``: this registers one.

        Args:
            app: The app.
            token: When given, scrapes must send ``Authorization: Bearer <token>`` (401
                problem otherwise).
            path: Where the metrics are served.
        """
        app.add_middleware(ClaimTimer, histogram=self.claim_seconds)
        # Not an engine error listener: it would turn off the statements that run straight
        # on the driver (see storage.direct), costing every request.
        app.state.joblib_database_error_observers = [
            *getattr(app.state, "joblib_database_error_observers", []),
            lambda _exc: self.database_errors.inc(),
        ]
        router = APIRouter()

        @router.get(path, include_in_schema=False)
        async def metrics(request: Request) -> Response:
            if token is not None and not _bearer_matches(request, token):
                problem = Unauthorized("A valid metrics bearer token is required.").to_problem()
                problem.instance = path
                return problem_response(problem, {"WWW-Authenticate": "Bearer"})
            return Response(await self.scrape(), media_type=CONTENT_TYPE_LATEST)

        app.include_router(router)

    async def scrape(self) -> bytes:
        """The metrics in Prometheus text format (reads the queue's state first).

        When the database cannot be read, the error is counted and the state of the last
        good scrape is reported: the counters matter most while the database is in trouble.
        """
        try:
            await self._refresh_state()
        except database_errors() as exc:
            self.database_errors.inc()
            logger.warning("metrics: could not read the queue's state: %s", type(exc).__name__)
        return generate_latest(self.registry)

    async def _refresh_state(self) -> None:
        db = self.queue.database
        now = datetime.now(UTC)
        alive_after = stale_cutoff(self.queue.settings, now)
        job = (Job.room_id, Job.category, Job.name)
        async with db.read() as session:
            rows = (
                await session.execute(
                    select(*job, func.count(), func.min(Task.created_at))
                    .join(Task, Task.job_id == Job.id)
                    .where(Task.status == TaskStatus.PENDING)
                    .group_by(*job)
                )
            ).all()
            live = await session.scalar(
                select(func.count())
                .select_from(Worker)
                .where(Worker.last_heartbeat >= alive_after)
            )
        depth: dict[str, tuple[int, float]] = {}
        for room, category, name, count, oldest in rows:
            label = self.job_label(f"{room}:{category}:{name}")
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            had = depth.get(label, (0, 0.0))
            depth[label] = (had[0] + count, max(had[1], age))
        self.queue_depth.clear()
        self.oldest_pending.clear()
        for label, (count, age) in sorted(depth.items()):
            self.queue_depth.labels(label).set(count)
            self.oldest_pending.labels(label).set(age)
        self.workers_live.set(live or 0)
        self.long_polls_waiting.set(db.notifier.waiting)


_TRANSITIONS = {
    TaskStatus.CLAIMED: "claimed",
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
    TaskStatus.PENDING: "requeued",
}


class ClaimTimer:
    """ASGI middleware timing ``POST /v1/joblib/tasks/claim`` into a histogram."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time claim requests; pass everything else straight through."""
        if scope["type"] != "http" or scope["path"] != _CLAIM_PATH:
            await self.app(scope, receive, send)
            return
        with self.histogram.time():
            await self.app(scope, receive, send)


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
