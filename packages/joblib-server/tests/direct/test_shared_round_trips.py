"""PostgreSQL: concurrent runs of a statement share one round trip and one commit.

A run of a statement marked with ``rows_of`` that finds another in flight queues; the queued runs
then go together (``storage.shared_pg``). Each test holds a row lock in a transaction of
its own, so that the first run waits in PostgreSQL while the others queue behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc, text

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.storage import Database, records
from zndraw_joblib_server.storage.prebuilt import BY_WORKER, prebuilt
from zndraw_joblib_server.storage.records import TASKS, task_param
from zndraw_joblib_server.testing import ApiUser

pytestmark = pytest.mark.backends("postgres")

P = "/v1/joblib"

NOTE = prebuilt(
    TASKS.update()
    .where(
        TASKS.c.id == task_param("b_id", "id"),
        TASKS.c.worker_id == task_param("b_worker", "worker_id"),
    )
    .values(message=task_param("b_message", "message"))
    .returning(TASKS.c.id, TASKS.c.worker_id, TASKS.c.message),
    rows_of=BY_WORKER,
)
"""A worker's statement: note ``b_message`` on the worker's task ``b_id``."""


@contextlib.asynccontextmanager
async def row_locked(app: FastAPI, task_id: uuid.UUID) -> AsyncIterator[None]:
    """Hold the row lock of ``task_id`` in another transaction until the block ends."""
    async with app.state.engine.connect() as conn, conn.begin():
        await conn.execute(
            text("SELECT id FROM joblib_task WHERE id = :id FOR UPDATE"), {"id": task_id}
        )
        yield


async def until(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Wait (up to ten seconds) until ``check`` holds."""
    for _ in range(1000):
        found = check()
        if found if isinstance(found, bool) else await found:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def lock_waits(app: FastAPI) -> bool:
    """Whether a statement on this test's database waits for a lock now."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with app.state.engine.connect() as conn:
        return bool((await conn.execute(waiting)).scalar_one())


class Rows:
    """Running tasks of distinct workers, inserted for the test."""

    def __init__(self, db: Database, job_id: uuid.UUID, task_row: Any) -> None:
        self.db = db
        self.job_id = job_id
        self.task_row = task_row

    async def make(self, workers: list[uuid.UUID]) -> list[uuid.UUID]:
        """One running task per entry of ``workers`` (held by that worker); their ids."""
        rows = [
            self.task_row(self.job_id, n, status=TaskStatus.RUNNING, worker_id=worker)
            for n, worker in enumerate(workers)
        ]
        async with self.db.write(standalone=True) as uow:
            await records.insert_tasks(uow.session, rows)
        return [row["id"] for row in rows]

    async def note(self, task_id: uuid.UUID, worker: uuid.UUID, message: str) -> list[Any]:
        """Run :data:`NOTE` outside a transaction; the rows it answered."""
        params = {"b_id": task_id, "b_worker": worker, "b_message": message}
        async with self.db.write(standalone=True) as uow:
            return list(await records.execute(uow.session, NOTE, params))

    async def messages(self, ids: list[uuid.UUID]) -> list[str | None]:
        """The tasks' messages, in the order of ``ids``."""
        async with self.db.write(standalone=True) as uow:
            found = await records.load(uow.session, ids)
        return [found[i].message for i in ids]


@pytest.fixture
def rows(db: Database, job_id: uuid.UUID, task_row: Any) -> Rows:
    """Running tasks of distinct workers, and the runs of :data:`NOTE` on them."""
    return Rows(db, job_id, task_row)


async def _queued_behind_a_waiting_run(
    app: FastAPI,
    db: Database,
    rows: Rows,
    ids: list[uuid.UUID],
    workers: list[uuid.UUID],
    messages: list[str],
) -> tuple[asyncio.Task[list[Any]], list[asyncio.Task[list[Any]]]]:
    """Start the first run (it waits for a lock the caller holds), then queue the others."""
    first = asyncio.create_task(rows.note(ids[0], workers[0], messages[0]))
    await until(lambda: lock_waits(app), "the first run waits for the lock")
    rest = [
        asyncio.create_task(rows.note(i, w, m))
        for i, w, m in zip(ids[1:], workers[1:], messages[1:], strict=True)
    ]
    await until(lambda: db.shared_runs.waiting() == len(rest), "the others queue")
    return first, rest


async def _four_runs(
    app: FastAPI, db: Database, rows: Rows, workers: list[uuid.UUID], messages: list[str]
) -> tuple[list[uuid.UUID], list[Any]]:
    """Four runs of :data:`NOTE`, three queued behind the first; the tasks, the answers
    (or errors)."""
    ids = await rows.make(workers)
    async with row_locked(app, ids[0]):
        first, rest = await _queued_behind_a_waiting_run(app, db, rows, ids, workers, messages)
    return ids, await asyncio.gather(first, *rest, return_exceptions=True)


async def test_queued_runs_go_together_and_each_gets_its_own_rows(
    app: FastAPI, db: Database, rows: Rows
) -> None:
    workers = [uuid.uuid4() for _ in range(4)]
    messages = [f"note {n}" for n in range(4)]
    shared = db.statements_shared
    ids, answers = await _four_runs(app, db, rows, workers, messages)
    for task_id, worker, message, answer in zip(ids, workers, messages, answers, strict=True):
        assert [(r.id, r.worker_id, r.message) for r in answer] == [(task_id, worker, message)]
    assert db.statements_shared - shared == 3  # the three queued runs, one batch
    assert await rows.messages(ids) == messages


async def test_runs_of_one_worker_never_share_a_batch(
    app: FastAPI, db: Database, rows: Rows
) -> None:
    """Rows are handed back by worker: two runs of one worker go in different batches."""
    workers = [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
    workers.append(workers[1])
    messages = [f"note {n}" for n in range(4)]
    shared = db.statements_shared
    ids, answers = await _four_runs(app, db, rows, workers, messages)
    for task_id, answer in zip(ids, answers, strict=True):
        assert [r.id for r in answer] == [task_id]
    assert db.statements_shared - shared == 2  # runs 1 and 2; run 3 then went alone
    assert await rows.messages(ids) == messages


async def test_a_failed_batch_wrote_nothing_and_each_run_goes_alone(
    app: FastAPI, db: Database, rows: Rows
) -> None:
    """One run's error (PostgreSQL refuses NUL in text) stays that run's own."""
    workers = [uuid.uuid4() for _ in range(4)]
    messages = ["note 0", "note 1", "bad \x00 note", "note 3"]
    shared = db.statements_shared
    ids, answers = await _four_runs(app, db, rows, workers, messages)
    assert isinstance(answers[2], exc.DataError)  # SQLAlchemy's class, as for a lone run
    for n in (0, 1, 3):
        assert [(r.id, r.message) for r in answers[n]] == [(ids[n], messages[n])]
    assert db.statements_shared == shared  # the batch failed; its runs went alone
    assert await rows.messages(ids) == ["note 0", "note 1", None, "note 3"]


async def test_a_cancelled_run_leaves_the_queue(app: FastAPI, db: Database, rows: Rows) -> None:
    workers = [uuid.uuid4() for _ in range(4)]
    ids = await rows.make(workers)
    messages = [f"note {n}" for n in range(4)]
    async with row_locked(app, ids[0]):
        first, rest = await _queued_behind_a_waiting_run(app, db, rows, ids, workers, messages)
        rest[1].cancel()
        with pytest.raises(asyncio.CancelledError):
            await rest[1]
    assert [r.id for r in await first] == [ids[0]]
    assert [r.id for r in await rest[0]] == [ids[1]]
    assert [r.id for r in await rest[2]] == [ids[3]]
    assert await rows.messages(ids) == ["note 0", "note 1", None, "note 3"]


async def test_a_cancelled_leader_lets_its_batch_finish(
    app: FastAPI, db: Database, rows: Rows
) -> None:
    """The batch's first run is cancelled while the batch waits in PostgreSQL: the batch
    still ends on its connection, and the other runs get their rows."""
    workers = [uuid.uuid4() for _ in range(4)]
    ids = await rows.make(workers)
    messages = [f"note {n}" for n in range(4)]
    async with row_locked(app, ids[2]):
        async with row_locked(app, ids[0]):
            first, rest = await _queued_behind_a_waiting_run(app, db, rows, ids, workers, messages)
        assert [r.id for r in await first] == [ids[0]]
        await until(lambda: lock_waits(app), "the batch waits for run 2's lock")
        rest[0].cancel()  # the batch's leader
        await asyncio.sleep(0.05)
        assert not rest[0].done()  # it waits for its batch before it gives up
    with pytest.raises(asyncio.CancelledError):
        await rest[0]
    assert [r.id for r in await rest[1]] == [ids[2]]
    assert [r.id for r in await rest[2]] == [ids[3]]
    assert await rows.messages(ids) == messages


async def test_completions_with_the_next_claim_share_a_round_trip(
    app: FastAPI, db: Database, as_alice: httpx.AsyncClient, flow: Any
) -> None:
    """Workers completing at once, each with ``claim_next``: each gets its own report and
    its own next task, no task twice."""
    workers = [await flow.worker(as_alice) for _ in range(4)]
    for worker in workers:
        job = await flow.job(as_alice, worker_id=worker)
    submitted = [(await flow.submit(as_alice, job["full_name"]))["id"] for _ in range(8)]
    running = [await flow.claim(as_alice, worker, start=True) for worker in workers]
    assert [t["id"] for t in running] == submitted[:4]

    async def complete(task: dict[str, Any]) -> httpx.Response:
        worker = task["worker_id"]
        body = {
            "status": "completed",
            "worker_id": worker,
            "result": {"done": task["id"]},
            "claim_next": {"worker_id": worker, "start": True},
        }
        return await as_alice.patch(f"{P}/tasks/{task['id']}", json=body)

    shared = db.statements_shared
    async with row_locked(app, uuid.UUID(running[0]["id"])):
        first = asyncio.create_task(complete(running[0]))
        await until(lambda: lock_waits(app), "the first completion waits for the lock")
        rest = [asyncio.create_task(complete(task)) for task in running[1:]]
        await until(lambda: db.shared_runs.waiting() == 3, "the others queue")
    answers = [(await first).json(), *[(await r).json() for r in rest]]
    assert db.statements_shared - shared == 3
    claimed = []
    for task, answer in zip(running, answers, strict=True):
        assert answer["id"] == task["id"]
        assert answer["status"] == "completed"
        assert answer["result"] == {"done": task["id"]}
        [next_task] = answer["claimed"]["tasks"]
        assert next_task["worker_id"] == task["worker_id"]
        assert next_task["status"] == "running"
        claimed.append(next_task["id"])
    assert sorted(claimed) == sorted(submitted[4:])
    health = (await as_alice.get("/health")).json()
    assert health["statements_shared"] == db.statements_shared


async def test_concurrent_submits_share_a_round_trip(
    app: FastAPI,
    db: Database,
    alice: ApiUser,
    as_alice: httpx.AsyncClient,
    flow: Any,
    task_row: Any,
) -> None:
    """Submits queued behind one that waits: each gets its own task and queue position."""
    job = await flow.job(as_alice)

    async def submit(key: str) -> dict[str, Any]:
        headers = {"Idempotency-Key": key}
        return await flow.submit(as_alice, job["full_name"], headers=headers, payload={"k": key})

    shared = db.statements_shared
    async with app.state.engine.connect() as conn:
        other = await conn.begin()  # holds key k0 until it rolls back: the first submit waits
        stored = f"{alice.id.hex}:k0"  # keys are stored scoped to their submitter
        row = task_row(uuid.UUID(job["id"]), 0, idempotency_key=stored)
        await conn.execute(TASKS.insert(), [row])
        first = asyncio.create_task(submit("k0"))
        await until(lambda: lock_waits(app), "the first submit waits for key k0")
        rest = [asyncio.create_task(submit(f"k{n}")) for n in (1, 2, 3)]
        await until(lambda: db.shared_runs.waiting() == 3, "the others queue")
        await other.rollback()
    answers = [await first, *[await r for r in rest]]
    assert db.statements_shared - shared == 3
    assert answers[0]["queue_position"] == 1
    assert sorted(a["queue_position"] for a in answers[1:]) == [2, 3, 4]
    listed = await as_alice.get(f"{P}/rooms/lab/tasks", params={"status": "pending"})
    payloads = {t["id"]: t["payload"] for t in listed.json()["items"]}
    assert payloads == {a["id"]: {"k": f"k{n}"} for n, a in enumerate(answers)}
