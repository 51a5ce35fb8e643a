"""Helpers for the pending-count tests: the database behind the app's back, checked queues."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from zndraw_joblib_server import JobLibSettings, SweepReport, sweep_once

P = "/v1/joblib"

_PG_TRIGGERS = ("insert", "delete", "update", "truncate")

DAMAGE = {
    "sqlite": {
        "emptied": ["DELETE FROM joblib_job_pending"],
        "wrong": ["UPDATE joblib_job_pending SET pending = pending + 40"],
        "dropped": [  # as a database of a version before the counts
            *(f"DROP TRIGGER joblib_task_pending_{name}" for name in _PG_TRIGGERS[:3]),
            "DROP TABLE joblib_job_pending",
        ],
    },
    "postgres": {
        "emptied": ["DELETE FROM joblib_job_pending_pg"],
        "wrong": ["UPDATE joblib_job_pending_pg SET pending = pending + 40"],
        "dropped": [
            *(f"DROP TRIGGER joblib_task_pending_{name} ON joblib_task" for name in _PG_TRIGGERS),
            "DROP TABLE joblib_job_pending_pg",
            *(f"DROP FUNCTION joblib_pending_{name}()" for name in (*_PG_TRIGGERS, "fold")),
        ],
    },
}
"""Ways the counts can be missing or wrong (an older version's database, a hand edit)."""

_KEPT = {
    "sqlite": "SELECT job_id, pending FROM joblib_job_pending",
    "postgres": "SELECT job_id, sum(pending) FROM joblib_job_pending_pg GROUP BY job_id",
}
_COUNTED = "SELECT job_id, count(*) FROM joblib_task WHERE status = 'pending' GROUP BY job_id"
_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE name LIKE 'joblib_job_pending%'",
    "postgres": "SELECT tablename FROM pg_tables WHERE tablename LIKE 'joblib_job_pending%'",
}


class Database:
    """The app's database, reached without the app (committed statements, raw SQL)."""

    def __init__(self, url: str, backend: str) -> None:
        self.backend = backend
        self.url = url
        self._engine: AsyncEngine | None = None

    async def sql(self, *statements: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run statements in one transaction (``:name`` parameters); the last one's rows."""
        rows: list[tuple[Any, ...]] = []
        if self.backend == "sqlite":  # UUIDs are stored as 32 hex digits
            params = {k: v.hex if isinstance(v, uuid.UUID) else v for k, v in params.items()}
            path = str(make_url(self.url).database)
            with closing(sqlite3.connect(path)) as conn, conn:
                for statement in statements:
                    rows = conn.execute(statement, params).fetchall()
            return rows
        if self._engine is None:
            self._engine = create_async_engine(self.url, poolclass=NullPool)
        async with self._engine.begin() as conn:
            for statement in statements:
                result = await conn.execute(text(statement), params)
                rows = [tuple(row) for row in result] if result.returns_rows else []
        return rows

    async def damage(self, how: str) -> None:
        """Break the counts as :data:`DAMAGE` says."""
        await self.sql(*DAMAGE[self.backend][how])

    async def tables(self) -> set[str]:
        """The counts tables present."""
        return {name for (name,) in await self.sql(_TABLES[self.backend])}

    async def rows(self) -> list[tuple[uuid.UUID, int, int]]:
        """PostgreSQL: the counts table's rows, ``(job_id, shard, pending)``, sorted."""
        found = await self.sql("SELECT job_id, shard, pending FROM joblib_job_pending_pg")
        return sorted((uuid.UUID(str(j)), s, n) for j, s, n in found)

    async def counts(self) -> dict[uuid.UUID, int]:
        """Check the kept counts against the pending tasks; the pending tasks per job.

        A job at 0 may keep its row. On PostgreSQL a job's count is the sum of its rows,
        some of which may be negative (a backend that claimed more than it submitted).
        """
        kept = {uuid.UUID(str(job)): int(n) for job, n in await self.sql(_KEPT[self.backend])}
        counted = {uuid.UUID(str(job)): int(n) for job, n in await self.sql(_COUNTED)}
        assert all(n >= 0 for n in kept.values()), kept
        assert {job: n for job, n in kept.items() if n} == counted
        return counted

    async def dispose(self) -> None:
        """Close the connections."""
        if self._engine is not None:
            await self._engine.dispose()


@pytest.fixture
async def db(settings: JobLibSettings, backend: str) -> AsyncIterator[Database]:
    """Raw access to the test's database."""
    database = Database(settings.database_url, backend)
    yield database
    await database.dispose()


def at(delta: timedelta) -> str:
    """An ISO timestamp ``delta`` from now."""
    return (datetime.now(UTC) + delta).isoformat()


class Queue:
    """Submits to one job that check every answered position against a read right after."""

    def __init__(self, client: httpx.AsyncClient, job: dict[str, Any]) -> None:
        self.client = client
        self.name = job["full_name"]

    async def post(self, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        """Submit one task; the answer."""
        resp = await self.client.post(
            f"{P}/rooms/lab/tasks/{self.name}", json={"payload": {}, **body}, headers=headers
        )
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    async def submit(self, headers: dict[str, str] | None = None, **body: Any) -> int:
        """Submit one task; its position (checked against a read)."""
        return await self.same_as_read(await self.post(headers, **body))

    async def batch(self, *items: dict[str, Any]) -> list[int]:
        """Submit a batch; the positions (each checked against a read)."""
        resp = await self.client.post(
            f"{P}/rooms/lab/jobs/{self.name}/tasks",
            json={"items": [{"payload": {}, **item} for item in items]},
        )
        assert resp.status_code == 202, resp.text
        return [await self.same_as_read(task) for task in resp.json()["items"]]

    async def read(self, task_id: str) -> int | None:
        """A task's position as a read answers it."""
        resp = await self.client.get(f"{P}/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()["queue_position"]  # type: ignore[no-any-return]

    async def same_as_read(self, task: dict[str, Any]) -> int:
        """The answered position of ``task``, asserted equal to a read's."""
        position = task["queue_position"]
        assert isinstance(position, int), task
        assert position >= 1
        assert position == await self.read(task["id"]), task
        return position

    async def listed_positions(self) -> list[int]:
        """The positions of the job's pending tasks, as listed."""
        params = {"status": "pending", "limit": 500}
        resp = await self.client.get(f"{P}/rooms/lab/jobs/{self.name}/tasks", params=params)
        assert resp.status_code == 200, resp.text
        return sorted(task["queue_position"] for task in resp.json()["items"])


async def fill(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Two jobs: five tasks submitted to the first (one claimed), two to the second."""
    jobs = []
    for name in ("Rotate", "Scale"):
        body = {"category": "modifiers", "name": name, "schema": {}}
        resp = await client.put(f"{P}/rooms/lab/jobs", json=body)
        assert resp.status_code == 201, resp.text
        jobs.append(resp.json())
    first, second = Queue(client, jobs[0]), Queue(client, jobs[1])
    for priority in (0, 3, 0, -1, 0):
        await first.submit(priority=priority)
    await second.submit()
    await second.submit(run_after=at(timedelta(hours=1)))
    resp = await client.post(f"{P}/tasks/claim", json={"worker_id": jobs[0]["worker_id"]})
    assert resp.json()["task"]["priority"] == 3
    return jobs


@pytest.fixture
def sweep_with() -> Callable[[FastAPI], Awaitable[SweepReport]]:
    """``await sweep_with(app)``: one sweeper pass of an app."""

    async def sweep(app: FastAPI) -> SweepReport:
        return await sweep_once(app.state.session_maker, app.state.joblib_settings)

    return sweep


@pytest.fixture
def queue() -> type[Queue]:
    """``queue(client, job)``: a :class:`Queue` of the job."""
    return Queue


@pytest.fixture
def filled() -> Any:
    """``await filled(client)``: two jobs with tasks (see :func:`fill`)."""
    return fill
