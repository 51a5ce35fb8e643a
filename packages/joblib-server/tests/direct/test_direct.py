"""Prebuilt statements run straight on an inline SQLite connection (``storage.direct``).

Each statement is run twice on the same transaction: prebuilt (run directly) and as a plain
copy (run by SQLAlchemy); the answers must be the same.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, event, exc, insert, select, text, tuple_, update
from sqlalchemy.engine import Engine

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.storage import records
from zndraw_joblib_server.storage.direct_result import DirectResult
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import TASKS, task_param

P = "/v1/joblib"

PATHS: list[Any] = [
    pytest.param(prebuilt, id="direct"),
    pytest.param(lambda stmt: stmt, id="sqlalchemy"),
]


pytestmark = pytest.mark.backends(
    "sqlite"
)  # statements run directly on inline SQLite connections alone


def busy_row(task_row: Any, job_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, Any]:
    """A running task: every kind of value set (another offset than UTC, too)."""
    cest = timezone(timedelta(hours=2))
    return task_row(
        job_id,
        7,
        created_by_id=user_id,
        worker_id=uuid.uuid4(),
        status=TaskStatus.RUNNING,
        result={"ok": [1, "two"]},
        error="boom",
        message="halfway",
        progress=0.5,
        claimed_at=datetime(2024, 5, 6, 9, 0, tzinfo=cest),
        started_at=task_row.t0 + timedelta(seconds=1),
        lease_expires_at=task_row.t0 + timedelta(minutes=1),
        attempt=1,
        timeout_seconds=1.5,
        lease_seconds=30.0,
        cancel_requested=True,
        cancel_requested_at=task_row.t0,
        idempotency_key="key-1",
        version=3,
    )


def normalised(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as it reads back: timestamps in UTC."""
    return {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in row.items()}


async def test_rows_read_back_as_through_sqlalchemy(db, job_id, admin, task_row) -> None:
    """Inserted and read directly, task rows keep every value, typed as SQLAlchemy types them."""
    rows = [task_row(job_id, 1), task_row(job_id, 2), busy_row(task_row, job_id, admin.id)]
    load = select(TASKS).where(TASKS.c.id.in_(bindparam("ids", expanding=True)))
    ids = {"ids": [row["id"] for row in rows]}
    async with db.write() as uow:
        session = uow.session
        await records.insert_tasks(session, rows)
        direct = await records.execute(session, prebuilt(load), ids)
        plain = await records.execute(session, load, ids)
        assert isinstance(direct, DirectResult)
        assert not isinstance(plain, DirectResult)
        assert tuple(direct.keys()) == tuple(plain.keys()) == records.FIELDS
        assert sorted(map(tuple, direct)) == sorted(map(tuple, plain))
        loaded = await records.load(session, ids["ids"])
        fetched = await records.fetch(session, load, ids)
    assert {r.id for r in fetched} == set(loaded)
    for row in rows:
        record = loaded[row["id"]]
        assert {f: getattr(record, f) for f in records.FIELDS} == normalised(row)
        assert record.status is row["status"]
        assert record.created_at.tzinfo is UTC
        assert isinstance(record.id, uuid.UUID)


async def test_direct_inserts_store_what_sqlalchemy_stores(db, job_id, admin, task_row) -> None:
    """The same row inserted both ways is stored as the same text (dates, UUIDs, JSON)."""
    first = busy_row(task_row, job_id, admin.id)
    second = {**first, "id": uuid.uuid4(), "idempotency_key": "key-2"}
    async with db.write() as uow:
        result = await records.execute(uow.session, prebuilt(insert(TASKS)), [first])
        assert isinstance(result, DirectResult)
        await records.execute(uow.session, insert(TASKS), [second])
        raw = (await uow.session.execute(text("SELECT * FROM joblib_task"))).mappings().all()
    stored = [{k: v for k, v in row.items() if k not in ("id", "idempotency_key")} for row in raw]
    assert len(stored) == 2
    assert stored[0] == stored[1]


@pytest.mark.parametrize("build", PATHS)
async def test_result_api(db, job_id, build: Callable[[Any], Any], task_row) -> None:
    """``first``, ``scalar_one``, ``scalars``, ``tuples`` and ``rowcount`` answer alike."""
    rows = [task_row(job_id, n) for n in range(3)]
    ids = [row["id"] for row in rows]
    by_id = build(select(TASKS.c.id, TASKS.c.payload).where(TASKS.c.id == task_param("id")))
    by_priority = build(
        select(TASKS.c.id).where(TASKS.c.priority <= task_param("top", "priority"))
    )
    touch = build(update(TASKS).where(TASKS.c.id == task_param("b_id", "id")).values(version=9))
    async with db.write() as uow:
        session = uow.session
        await records.insert_tasks(session, rows)

        async def run(stmt: Any, params: Any) -> Any:
            result = await records.execute(session, stmt, params)
            assert isinstance(result, DirectResult) is (build is prebuilt)
            return result

        first = (await run(by_id, {"id": ids[1]})).first()
        assert first.id == ids[1]
        assert first.payload == rows[1]["payload"]
        assert (await run(by_id, {"id": uuid.uuid4()})).first() is None
        assert (await run(by_id, {"id": ids[2]})).scalar_one() == ids[2]
        with pytest.raises(exc.NoResultFound):
            (await run(by_id, {"id": uuid.uuid4()})).scalar_one()
        assert (await run(by_priority, {"top": 0})).scalar_one_or_none() == ids[0]
        assert (await run(by_priority, {"top": -1})).scalar_one_or_none() is None
        with pytest.raises(exc.MultipleResultsFound):
            (await run(by_priority, {"top": 1})).scalar_one_or_none()
        assert len((await run(by_priority, {"top": 2})).all()) == 3
        assert set((await run(by_priority, {"top": 2})).scalars()) == set(ids)
        assert (await run(by_priority, {"top": 0})).tuples().all() == [(ids[0],)]
        many = [{"b_id": ids[0]}, {"b_id": uuid.uuid4()}, {"b_id": ids[2]}]
        assert (await run(touch, many)).rowcount == 2
        versions = await records.load(session, ids)
    assert [versions[i].version for i in ids] == [9, 0, 9]


async def test_expanding_lists_of_any_length(db, job_id, task_row) -> None:
    """IN lists of 1, 2 and 5 values run directly; an empty one falls back to SQLAlchemy."""
    rows = [task_row(job_id, n, priority=n) for n in range(6)]
    ids = [row["id"] for row in rows]
    plain = select(TASKS.c.id).where(
        TASKS.c.priority >= task_param("low", "priority"),
        TASKS.c.id.in_(bindparam("ids", expanding=True)),
        TASKS.c.status == TaskStatus.PENDING,
    )
    stmt = prebuilt(plain)
    async with db.write() as uow:
        session = uow.session
        await records.insert_tasks(session, rows)
        for size in (1, 2, 5, 0, 2, 1):
            params = {"low": 1, "ids": ids[:size]}
            result = await records.execute(session, stmt, params)
            assert isinstance(result, DirectResult) is (size > 0)
            expected = set(ids[1:size])
            assert set(result.scalars()) == expected
            assert set((await records.execute(session, plain, params)).scalars()) == expected


async def test_a_derived_statement_runs_its_own_sql(db, job_id, task_row) -> None:
    """``.where()`` on a prebuilt statement answers for itself, not with the original's plan."""
    rows = [task_row(job_id, n, priority=n) for n in range(4)]
    base = prebuilt(select(TASKS.c.id).where(TASKS.c.job_id == task_param("job_id")))
    async with db.write() as uow:
        session = uow.session
        await records.insert_tasks(session, rows)
        every = await records.execute(session, base, {"job_id": job_id})
        assert isinstance(every, DirectResult)
        assert len(every.all()) == 4
        derived = base.where(TASKS.c.priority >= 2)
        found = await records.execute(session, derived, {"job_id": job_id})
        assert set(found.scalars()) == {row["id"] for row in rows[2:]}
        latest = derived.order_by(TASKS.c.priority.desc()).limit(1)
        assert (await records.execute(session, latest, {"job_id": job_id})).scalar_one() == (
            rows[3]["id"]
        )
        assert len((await records.execute(session, base, {"job_id": job_id})).all()) == 4


async def test_a_driver_error_is_sqlalchemys_and_rolls_back(db, job_id, task_row) -> None:
    """A duplicate key raises ``IntegrityError``; the transaction rolls back, and goes on."""
    kept, lost = task_row(job_id, 1), task_row(job_id, 2)
    async with db.write() as uow:
        await records.insert_tasks(uow.session, [kept])

    async def insert_a_duplicate() -> None:
        async with db.write() as uow:
            await records.insert_tasks(uow.session, [lost])
            await records.insert_tasks(uow.session, [task_row(job_id, 3, id=kept["id"])])

    with pytest.raises(exc.IntegrityError) as raised:
        await insert_a_duplicate()
    assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    async with db.write() as uow:
        assert set(await records.load(uow.session, [kept["id"], lost["id"]])) == {kept["id"]}
        await records.insert_tasks(uow.session, [lost])
    async with db.write() as uow:
        assert len(await records.load(uow.session, [kept["id"], lost["id"]])) == 2


async def test_direct_statements_are_counted(db, job_id, anonymous, task_row) -> None:
    """Every statement run directly counts in ``Database.statements`` and ``GET /health``."""
    select_one = prebuilt(select(TASKS.c.id).where(TASKS.c.id == task_param("id")))
    touch = prebuilt(update(TASKS).where(TASKS.c.id == task_param("b_id", "id")).values(version=1))
    rows = [task_row(job_id, n) for n in range(3)]
    before = (await anonymous.get("/health")).json()["statements"]
    async with db.write() as uow:
        session = uow.session
        start = db.statements
        await records.insert_tasks(session, rows)  # one executemany
        for row in rows:
            assert isinstance(await records.execute(session, select_one, row), DirectResult)
        result = await records.execute(session, touch, [{"b_id": row["id"]} for row in rows])
        assert isinstance(result, DirectResult)
        assert db.statements - start == 5
    after = (await anonymous.get("/health")).json()["statements"]
    assert after - before == 5 + 1  # and the health check's own SELECT 1


@pytest.mark.parametrize("on_class", [False, True], ids=["engine", "Engine-class"])
@pytest.mark.parametrize(
    "name", ["before_cursor_execute", "after_cursor_execute", "before_execute", "after_execute"]
)
async def test_a_cursor_listener_sees_every_statement(
    app, db, flow, as_alice, job_id, name: str, on_class: bool
) -> None:
    """With a host's cursor listener (tracing) on the engine, nothing bypasses SQLAlchemy."""
    seen: list[str] = []

    def trace(_conn: Any, statement: Any, *_args: Any) -> None:
        if name.endswith("cursor_execute"):  # (conn, cursor, statement, ...)
            statement = _args[0]
        seen.append(str(statement))

    target: Any = Engine if on_class else app.state.engine.sync_engine
    stmt = prebuilt(select(TASKS.c.id).where(TASKS.c.job_id == task_param("job_id")))
    full_name = (await flow.job(as_alice, name="Traced"))["full_name"]
    event.listen(target, name, trace)
    try:
        assert db.direct.counter(db.engine.sync_engine) is None  # through SQLAlchemy
        async with db.write() as uow:
            result = await records.execute(uow.session, stmt, {"job_id": job_id})
            assert not isinstance(result, DirectResult)
        assert any("FROM joblib_task" in sql for sql in seen)
        seen.clear()
        await flow.submit(as_alice, full_name)
        assert any(sql.startswith("INSERT INTO joblib_task ") for sql in seen), seen
    finally:
        event.remove(target, name, trace)
    assert db.direct.counter(db.engine.sync_engine) is not None  # direct again
    async with db.write() as uow:
        result = await records.execute(uow.session, stmt, {"job_id": job_id})
        assert isinstance(result, DirectResult)


async def test_an_error_listener_sees_driver_errors(db, job_id, task_row) -> None:
    """With a ``handle_error`` listener on the engine, statements go through SQLAlchemy."""
    seen: list[BaseException] = []

    def on_error(context: Any) -> None:
        seen.append(context.original_exception)

    row = task_row(job_id, 1)
    engine = db.engine.sync_engine

    async def insert_twice() -> None:
        async with db.write() as uow:
            await records.insert_tasks(uow.session, [row])
            await records.insert_tasks(uow.session, [row])

    event.listen(engine, "handle_error", on_error)
    try:
        with pytest.raises(exc.IntegrityError):
            await insert_twice()
    finally:
        event.remove(engine, "handle_error", on_error)
    assert len(seen) == 1
    assert isinstance(seen[0], sqlite3.IntegrityError)


async def test_statements_rendered_at_execution_go_through_sqlalchemy(
    db, job_id, task_row
) -> None:
    """Literal-rendered parameters and tuple IN lists are left to SQLAlchemy, and work."""
    rows = [task_row(job_id, n, priority=n) for n in range(3)]
    literal = prebuilt(
        select(TASKS.c.id).where(TASKS.c.priority == bindparam("p", literal_execute=True))
    )
    pairs = prebuilt(
        select(TASKS.c.id).where(
            tuple_(TASKS.c.id, TASKS.c.priority).in_(bindparam("pairs", expanding=True))
        )
    )
    async with db.write() as uow:
        session = uow.session
        await records.insert_tasks(session, rows)
        result = await records.execute(session, literal, {"p": 1})
        assert not isinstance(result, DirectResult)
        assert result.scalar_one() == rows[1]["id"]
        wanted = [(rows[0]["id"], 0), (rows[2]["id"], 2), (rows[1]["id"], 9)]
        result = await records.execute(session, pairs, {"pairs": wanted})
        assert not isinstance(result, DirectResult)
        assert set(result.scalars()) == {rows[0]["id"], rows[2]["id"]}


async def test_writes_share_one_connection_until_stop(db, job_id, task_row) -> None:
    """Write transactions run on one kept connection; ``stop()`` gives it back to the pool."""
    pool = db.engine.sync_engine.pool
    async with db.write() as uow:  # the first write shows the connections are inline
        await records.insert_tasks(uow.session, [task_row(job_id, 8)])
    for n in range(3):
        async with db.write() as uow:
            await records.insert_tasks(uow.session, [task_row(job_id, n)])
        assert pool.checkedout() == 1
    await db.stop()
    assert pool.checkedout() == 0
    async with db.write() as uow:  # opened again on the next write
        assert len(await records.load(uow.session, [])) == 0
        await records.insert_tasks(uow.session, [task_row(job_id, 9)])
    assert pool.checkedout() == 1
