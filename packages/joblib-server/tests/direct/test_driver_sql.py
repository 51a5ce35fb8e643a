"""Prebuilt statements in a transaction on PostgreSQL, or on aiosqlite's thread: their SQL,
compiled once, runs through SQLAlchemy's ``exec_driver_sql``; the answers must equal
SQLAlchemy's own for the same statement compiled by it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import bindparam, exc, insert, select

from zndraw_joblib_server.storage import Database, records
from zndraw_joblib_server.storage.direct_result import DirectResult
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import TASKS, task_param

pytestmark = pytest.mark.parametrize("settings_overrides", [{"sqlite_inline": False}])


async def test_rows_equal_sqlalchemys(db: Database, sample_rows: list[dict[str, Any]]) -> None:
    """Inserted and read from the plan's SQL, rows keep every value, typed alike."""
    load = select(TASKS).where(TASKS.c.id.in_(bindparam("ids", expanding=True)))
    by_id = prebuilt(select(TASKS.c.version).where(TASKS.c.id == task_param("id")))
    ids = {"ids": [row["id"] for row in sample_rows]}
    async with db.write() as uow:
        session = uow.session
        inserted = await records.execute(session, prebuilt(insert(TASKS)), sample_rows)
        assert isinstance(inserted, DirectResult)
        start = db.statements  # (after the transaction's BEGIN on aiosqlite)
        direct = await records.execute(session, prebuilt(load), ids)
        plain = await records.execute(session, load, ids)
        assert isinstance(direct, DirectResult)
        assert not isinstance(plain, DirectResult)
        assert db.statements - start == 2  # counted as SQLAlchemy's
        assert tuple(direct.keys()) == tuple(plain.keys()) == records.FIELDS
        direct_rows, plain_rows = sorted(map(tuple, direct)), sorted(map(tuple, plain))
        assert direct_rows == plain_rows
        assert [list(map(type, r)) for r in direct_rows] == [
            list(map(type, r)) for r in plain_rows
        ]
        assert (
            await records.execute(session, by_id, {"id": sample_rows[1]["id"]})
        ).scalar_one() == 3
        assert (await records.execute(session, by_id, {"id": uuid.uuid4()})).first() is None
    for row in sample_rows:
        assert (await _load(db, row["id"])).status is row["status"]


async def _load(db: Database, task_id: uuid.UUID) -> records.TaskRecord:
    async with db.read() as session:
        return await records.load_one(session, task_id)


async def test_a_duplicate_key_is_an_integrity_error(db: Database, job_id, task_row) -> None:
    """A driver error from the plan's SQL is SQLAlchemy's; the transaction rolls back."""
    row = task_row(job_id, 1)

    async def insert_twice() -> None:
        async with db.write() as uow:
            await records.insert_tasks(uow.session, [row])
            await records.insert_tasks(uow.session, [row])

    with pytest.raises(exc.IntegrityError):
        await insert_twice()
    async with db.read() as session:
        assert await records.load(session, [row["id"]]) == {}
