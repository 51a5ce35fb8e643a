"""PostgreSQL: hot writes outside a transaction, their statements run straight on asyncpg.

Submits, claims and single updates run with ``Database.write(standalone=True)``: each
statement commits on its own, a claim beats and checks its worker in the claim statement,
an update applies only to the version it read (and is retried in a transaction when the
task changed meanwhile). Their prebuilt statements run on asyncpg directly
(``storage.direct_pg``), with the values SQLAlchemy would send and read.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, event, exc, insert, select, text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from zndraw_joblib_server.storage import Database, records
from zndraw_joblib_server.storage.database import session_connection
from zndraw_joblib_server.storage.direct import Plan
from zndraw_joblib_server.storage.direct_pg import translate
from zndraw_joblib_server.storage.direct_result import DirectResult
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import TASKS, task_param

pytestmark = pytest.mark.backends("postgres")

P = "/v1/joblib"


async def test_direct_rows_equal_sqlalchemys(
    db: Database, sample_rows: list[dict[str, Any]]
) -> None:
    """Written and read on asyncpg directly, rows keep every value as SQLAlchemy types it."""
    load = select(TASKS).where(TASKS.c.id.in_(bindparam("ids", expanding=True)))
    ids = {"ids": [row["id"] for row in sample_rows]}
    async with db.write(standalone=True) as uow:
        assert uow.store is db.store.standalone()
        session = uow.session
        inserted = await records.execute(session, prebuilt(insert(TASKS)), sample_rows)
        assert isinstance(inserted, DirectResult)
        direct = await records.execute(session, prebuilt(load), ids)
        plain = await records.execute(session, load, ids)
        assert isinstance(direct, DirectResult)
        assert not isinstance(plain, DirectResult)
        assert tuple(direct.keys()) == tuple(plain.keys()) == records.FIELDS
        direct_rows = sorted(map(tuple, direct))
        plain_rows = sorted(map(tuple, plain))
        assert direct_rows == plain_rows
        assert [list(map(type, r)) for r in direct_rows] == [
            list(map(type, r)) for r in plain_rows
        ]
        loaded = await records.load(session, ids["ids"])
    for row in sample_rows:
        record = loaded[row["id"]]
        assert {f: getattr(record, f) for f in records.FIELDS} == row
        assert record.status is row["status"]
        assert isinstance(record.id, uuid.UUID)


async def test_direct_update_counts_rows_and_empty_results_have_keys(
    db: Database, job_id: uuid.UUID, task_row
) -> None:
    """An update answers its row count; a query without rows still names its columns."""
    row = task_row(job_id, 1)
    touch = prebuilt(
        TASKS.update().where(TASKS.c.id == task_param("b_id", "id")).values(version=5)
    )
    by_id = prebuilt(select(TASKS.c.id, TASKS.c.version).where(TASKS.c.id == task_param("id")))
    async with db.write(standalone=True) as uow:
        await records.insert_tasks(uow.session, [row])
        assert (await records.execute(uow.session, touch, {"b_id": row["id"]})).rowcount == 1
        assert (await records.execute(uow.session, touch, {"b_id": uuid.uuid4()})).rowcount == 0
        none = await records.execute(uow.session, by_id, {"id": uuid.uuid4()})
        assert isinstance(none, DirectResult)
        assert tuple(none.keys()) == ("id", "version")
        assert none.first() is None
    async with db.read() as session:  # committed without a transaction of its own
        found = await session.execute(select(TASKS.c.version).where(TASKS.c.id == row["id"]))
        assert found.scalar_one() == 5


def test_plan_numbers_list_members_as_sqlalchemy_does() -> None:
    """With ``$n`` parameters, list members are numbered after the rest, in SQLAlchemy's order."""
    dialect = asyncpg_dialect.dialect()
    stmt = select(TASKS.c.id).where(
        TASKS.c.priority >= task_param("low", "priority"),
        TASKS.c.id.in_(bindparam("ids", expanding=True)),
        TASKS.c.job_id.in_(bindparam("jobs", expanding=True)),
        TASKS.c.room_id == task_param("room", "room_id"),
    )
    plan = Plan(stmt, dialect)
    assert plan.usable
    compiled = stmt.compile(dialect=dialect)
    for sizes in [(1, 1), (2, 3), (5, 1)]:
        params = {
            "low": 1,
            "ids": [uuid.uuid4() for _ in range(sizes[0])],
            "jobs": [uuid.uuid4() for _ in range(sizes[1])],
            "room": "lab",
        }
        expanded = compiled._process_parameters_for_postcompile(dict(params))
        assert plan.shape(params) == expanded.statement
        values = {**expanded.parameters}
        assert plan.values(params) == [values[name] for name in expanded.positiontup]
    assert plan.shape({"low": 1, "ids": [], "jobs": [uuid.uuid4()], "room": "x"}) is None


async def test_driver_errors_are_sqlalchemys_and_the_connection_goes_on(
    db: Database, job_id: uuid.UUID, task_row
) -> None:
    """A constraint violation raises SQLAlchemy's IntegrityError; later statements still run."""
    orphan = task_row(uuid.uuid4(), 1)  # no such job: foreign key violation
    async with db.write(standalone=True) as uow:
        with pytest.raises(exc.IntegrityError):
            await records.insert_tasks(uow.session, [orphan])
        await records.insert_tasks(uow.session, [task_row(job_id, 2)])
    async with db.read() as session:
        count = await session.execute(text("SELECT count(*) FROM joblib_task"))
        assert count.scalar_one() == 1


async def test_a_broken_connection_is_invalidated(db: Database, job_id: uuid.UUID) -> None:
    """A connection killed under a direct statement raises and leaves the pool healthy."""
    by_id = prebuilt(select(TASKS.c.id).where(TASKS.c.id == task_param("id")))

    async def query_after_kill() -> None:
        async with db.write(standalone=True) as uow:
            ran = await records.execute(uow.session, by_id, {"id": uuid.uuid4()})
            assert isinstance(ran, DirectResult)
            conn, _ = await session_connection(uow.session)
            pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
            async with db.read() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            for _ in range(50):  # the kill arrives asynchronously
                await records.execute(uow.session, by_id, {"id": uuid.uuid4()})
                await asyncio.sleep(0.02)

    with pytest.raises(exc.DBAPIError) as raised:
        await query_after_kill()
    assert raised.value.connection_invalidated
    async with db.write(standalone=True) as uow:
        result = await records.execute(uow.session, by_id, {"id": uuid.uuid4()})
        assert isinstance(result, DirectResult)


async def test_execution_listeners_see_every_statement(
    app: FastAPI, db: Database, as_alice: httpx.AsyncClient, flow
) -> None:
    """With a host's cursor listener on the engine, hot statements go through SQLAlchemy."""
    job, worker, _task = await flow.claimed(as_alice)
    assert db.engine is not None
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = db.engine.sync_engine
    event.listen(engine, "after_cursor_execute", listen)
    try:
        await flow.submit(as_alice, job["full_name"])
        assert await flow.claim(as_alice, worker) is not None
    finally:
        event.remove(engine, "after_cursor_execute", listen)
    assert any(s.startswith("INSERT INTO joblib_task") for s in seen)
    assert any("UPDATE joblib_worker SET last_heartbeat" in s for s in seen)


async def test_concurrent_updates_of_one_task_lose_none(as_alice: httpx.AsyncClient, flow) -> None:
    """Updates racing on one task each apply once (a stale one is retried, not lost)."""
    _job, worker, task = await flow.claimed(as_alice, running=True)
    start = task["version"]
    answers = await asyncio.gather(
        *(
            flow.patch(as_alice, task["id"], worker_id=worker, progress=i / 20, message=f"m{i}")
            for i in range(20)
        )
    )
    assert [r.status_code for r in answers] == [200] * 20
    assert sorted(r.json()["version"] for r in answers) == list(range(start + 1, start + 21))
    assert (await flow.task(as_alice, task["id"]))["version"] == start + 20


async def test_claims_racing_worker_deletion_leave_nothing_held(
    as_alice: httpx.AsyncClient, flow
) -> None:
    """A claim beside ``DELETE /workers/{id}`` claims nothing, or what it claimed is released."""
    for round_ in range(8):
        job = await flow.job(as_alice, name=f"Race{round_}")
        worker = str(job["worker_id"])
        for _ in range(3):
            await flow.submit(as_alice, job["full_name"])
        claim, delete = await asyncio.gather(
            as_alice.post(f"{P}/tasks/claim", json={"worker_id": worker, "max_tasks": 3}),
            as_alice.delete(f"{P}/workers/{worker}"),
        )
        assert claim.status_code in (200, 404), claim.text
        assert delete.status_code in (200, 204), delete.text
        tasks = (await flow.room_tasks(as_alice))["items"]
        mine = [t for t in tasks if t["job_name"] == job["full_name"]]
        assert len(mine) == 3
        assert {t["status"] for t in mine} <= {"pending", "failed"}, mine


async def test_a_submit_wakes_a_claim_waiting_in_this_process(
    as_alice: httpx.AsyncClient, flow
) -> None:
    """A single submit is an insert outside a transaction even with a claim waiting in this
    process; that claim is woken and answers with the new task."""
    job = await flow.job(as_alice, name="Waiting")
    worker = str(job["worker_id"])
    waiter = asyncio.create_task(
        as_alice.post(
            f"{P}/tasks/claim", json={"worker_id": worker}, headers={"Prefer": "wait=10"}
        )
    )
    await asyncio.sleep(0.3)
    submitted = await flow.submit(as_alice, job["full_name"])
    claimed = await asyncio.wait_for(waiter, 10)
    assert claimed.status_code == 200
    assert claimed.json()["task"]["id"] == submitted["id"]


def test_asyncpg_errors_become_the_exceptions_callers_handle() -> None:
    """By SQLSTATE class: a taken key ``IntegrityError``, a shutdown or a deadlock
    ``OperationalError`` (503), a closed connection ``InterfaceError``; others as they are."""
    import asyncpg

    errors = asyncpg.exceptions
    cases = {
        errors.UniqueViolationError: exc.IntegrityError,
        errors.AdminShutdownError: exc.OperationalError,
        errors.DeadlockDetectedError: exc.OperationalError,
        errors.ConnectionDoesNotExistError: exc.OperationalError,
        errors.UndefinedTableError: exc.ProgrammingError,
        errors.InvalidTextRepresentationError: exc.DataError,
        errors.InternalServerError: exc.InternalError,
        errors.InterfaceError: exc.InterfaceError,
    }
    for raised, expected in cases.items():
        error = raised("boom")
        translated = translate(error, "SELECT 1", {}, broken=True)
        assert type(translated) is expected, raised
        assert isinstance(translated, exc.DBAPIError)
        assert translated.orig is error
        assert translated.connection_invalidated
    other = ValueError("not asyncpg's")
    assert translate(other, "SELECT 1", {}) is other
