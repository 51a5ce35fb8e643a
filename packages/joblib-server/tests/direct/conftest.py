"""Shared by the tests of statements run straight on the driver (SQLite and asyncpg)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.models import new_task_row
from zndraw_joblib_server.storage import Database, get_database


class TaskRows:
    """Builds complete task rows, for tests that write the tasks table themselves."""

    t0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    """The rows' due time (their creation times follow it by ``n`` microseconds)."""

    def __call__(self, job_id: uuid.UUID, n: int, **changes: Any) -> dict[str, Any]:
        """Every column of a task row (a pending one unless ``changes`` say otherwise)."""
        row = new_task_row(
            job_id=job_id,
            room_id="lab",
            payload={"n": n, "text": "ünïcode", "list": [1, 2.5, None, {"a": True}]},
            priority=n % 3,
            run_after=self.t0,
            created_at=self.t0 + timedelta(microseconds=n),
            max_attempts=3,
        )
        row.update(changes)
        return row


@pytest.fixture
def task_row() -> TaskRows:
    """``task_row(job_id, n, **changes)``: a complete task row; ``task_row.t0``: its time."""
    return TaskRows()


@pytest.fixture
def sample_rows(job_id: uuid.UUID, task_row: TaskRows) -> list[dict[str, Any]]:
    """Two rows of ``job_id``: a pending one, and a running one with every column set."""
    t0 = task_row.t0
    running = task_row(
        job_id,
        2,
        status=TaskStatus.RUNNING,
        worker_id=uuid.uuid4(),
        result={"ok": [1, "two"]},
        error="boom",
        progress=0.5,
        started_at=t0 + timedelta(seconds=1),
        lease_expires_at=t0 + timedelta(minutes=1),
        timeout_seconds=1.5,
        cancel_requested=True,
        idempotency_key="key-1",
        version=3,
    )
    return [task_row(job_id, 1), running]


BEAT = "UPDATE joblib_worker SET last_heartbeat"
"""How a worker's heartbeat written on its own begins."""


class Statements(list[str]):
    """SQL statements seen, in order."""

    def on(
        self, tables: tuple[str, ...] = ("joblib_task", "joblib_worker"), beats: bool = True
    ) -> list[str]:
        """The first words of those naming ``tables`` (``beats``: with beats on their own)."""
        return [
            s.split(" ", 1)[0]
            for s in self
            if any(t in s for t in tables) and (beats or not s.startswith(BEAT))
        ]


@pytest.fixture
def statements(app: FastAPI):
    """The SQL statements the app runs (through SQLAlchemy: a listener turns the direct
    path off) while the fixture's list is being filled."""
    seen = Statements()

    def trace(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", trace)
    yield seen
    event.remove(engine, "before_cursor_execute", trace)


@pytest.fixture
def db(app: FastAPI) -> Database:
    """The app's database handle."""
    return get_database(app.state.session_maker, app.state.joblib_settings)


@pytest.fixture
async def job_id(flow, as_admin) -> uuid.UUID:
    """A registered job the test's task rows belong to."""
    return uuid.UUID(str((await flow.job(as_admin))["id"]))
