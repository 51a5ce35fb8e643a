"""The web dashboard: rooms, jobs, workers and tasks of a queue, live, with actions.

A static page (plain HTML, CSS and one script, no build step) served by a router, plus one
read endpoint, ``GET /v1/joblib/dashboard/state``, that answers a snapshot and, given the
snapshot's ``seq`` back, waits (a long-poll) until the queue changes in this process or
``wait`` seconds pass. The actions call the queue's own REST API, so its rules hold: cancel
(``POST /v1/joblib/tasks/{id}/cancel``), retry (a new submit with the same job, room and
payload and the ``Idempotency-Key: retry-<id>``, so a double click makes one task and the new
task shows what it retries), remove a worker (``DELETE /v1/joblib/workers/{id}``).

The reference app mounts it at ``/joblib/`` with a login form; a host mounts it behind its
own authentication (whatever :func:`~zndraw_joblib_server.get_current_user` accepts, e.g. a
session cookie)::

    dashboard = Dashboard.attach(queue)     # before queue.include_in(app)
    queue.include_in(app)
    dashboard.include_in(app, prefix="/joblib", login_url=None)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.resources import files
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import HTMLResponse, Response

from zndraw_joblib_core import API_PREFIX, Event, TaskStatus
from zndraw_joblib_server.dashboard.queries import load_state
from zndraw_joblib_server.dependencies import ActorDep, DatabaseDep, RoomAccessDep, SettingsDep
from zndraw_joblib_server.metrics import fan_out
from zndraw_joblib_server.services.liveness import stale_cutoff

if TYPE_CHECKING:
    from zndraw_joblib_server.queue import JobQueue

__all__ = ["ChangeFeed", "Dashboard"]

STATE_PATH = f"{API_PREFIX}/dashboard/state"
"""The dashboard's read endpoint (under the queue's prefix: its errors are problems)."""

MAX_WAIT_SECONDS = 25.0
"""Longest wait of one state long-poll (changes in other processes show after this)."""

_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


class ChangeFeed:
    """A counter of committed changes in this process that long-polls can wait on."""

    def __init__(self) -> None:
        self.seq = 0
        self._changed = asyncio.Event()

    async def sink(self, events: Sequence[Event]) -> None:
        """Count a batch of events and wake every waiter (an event sink)."""
        self.seq += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, since: int, seconds: float) -> None:
        """Return once ``seq`` differs from ``since``, or after ``seconds``."""
        if self.seq != since or seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)


class Dashboard:
    """The dashboard of one queue.

    Args:
        queue: The queue shown.
    """

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.feed = ChangeFeed()

    @classmethod
    def attach(cls, queue: JobQueue) -> Dashboard:
        """Build the dashboard and add its change feed to the queue's event sink.

        Call it before :meth:`JobQueue.include_in <zndraw_joblib_server.JobQueue.include_in>`.
        """
        dashboard = cls(queue)
        queue.event_sink = fan_out(queue.event_sink, dashboard.feed.sink)
        return dashboard

    def router(self, prefix: str = "/joblib", login_url: str | None = None) -> APIRouter:
        """The dashboard's routes: the page, its static files and :data:`STATE_PATH`.

        Args:
            prefix: Where the page is served (``{prefix}/``).
            login_url: A fastapi-users style login endpoint (form fields ``username`` and
                ``password``, answering ``access_token``); the page then shows a login form
                and sends the token as a bearer token. None: the page relies on the host's
                own session (cookies are sent with every request).
        """
        router = APIRouter(include_in_schema=False)
        config = json.dumps({"api": API_PREFIX, "state": STATE_PATH, "login": login_url})
        config = config.replace("<", "\\u003c")  # the JSON sits inside a <script> element
        page = _static("index.html").replace("{{CONFIG}}", config)
        assets = {name: _static(name) for name in _STATIC}

        @router.get(prefix + "/", response_class=HTMLResponse)
        async def index() -> HTMLResponse:
            return HTMLResponse(page, headers=_NO_STORE)

        @router.get(prefix + "/static/{name}")
        async def static(name: str) -> Response:
            if name not in assets:
                return Response(status_code=404)
            return Response(assets[name], media_type=_STATIC[name], headers=_NO_STORE)

        @router.get(STATE_PATH)
        async def state(
            actor: ActorDep,
            db: DatabaseDep,
            access: RoomAccessDep,
            settings: SettingsDep,
            room: Annotated[str | None, Query(max_length=255)] = None,
            job: Annotated[str | None, Query(max_length=600)] = None,
            status: TaskStatus | None = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 100,
            since: Annotated[int | None, Query(ge=0)] = None,
            wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0,
        ) -> dict[str, Any]:
            if since is not None:
                await self.feed.wait(since, wait)
            seq = self.feed.seq
            now = datetime.now(UTC)
            async with db.read() as session:
                out = await load_state(
                    session,
                    actor,
                    access,
                    now=now,
                    alive_after=stale_cutoff(settings, now),
                    room=room or None,
                    job=job or None,
                    status=status,
                    limit=limit,
                )
            out["seq"] = seq
            return out

        return router

    def include_in(
        self, app: FastAPI, *, prefix: str = "/joblib", login_url: str | None = None
    ) -> None:
        """Mount :meth:`router` on ``app``."""
        app.include_router(self.router(prefix, login_url))


_NO_STORE = {"Cache-Control": "no-store"}


def _static(name: str) -> str:
    return (files(__package__) / "static" / name).read_text(encoding="utf-8")
