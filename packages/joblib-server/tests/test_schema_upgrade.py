"""A database created by ``create_all`` before migrations existed is adopted at start.

It gets ``joblib_job.owner_id`` and the newer indexes, and is stamped as revision 0001.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing

from fastapi import FastAPI
from sqlalchemy import inspect, make_url, text

from zndraw_joblib_server.migrations import current, ensure_schema, head_revision

P = "/v1/joblib"
BODY = {"category": "modifiers", "name": "Rotate", "schema": {}}
NEW_INDEXES = ("ix_joblib_task_user_pending", "ix_joblib_task_finished")


def _downgrade_sqlite(path: str) -> None:
    """Rebuild ``joblib_job`` without ``owner_id`` (SQLite cannot drop a referencing column)."""
    with closing(sqlite3.connect(path)) as conn, conn:
        (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'joblib_job'").fetchone()
        ddl = re.sub(r",\s*owner_id [^,]*", "", ddl)
        ddl = re.sub(r",\s*FOREIGN KEY\s*\(owner_id\)[^,)]*\)[^,)]*", "", ddl)
        assert "owner_id" not in ddl, ddl
        columns = "id, room_id, category, name, schema, deleted, created_at, updated_at"
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(ddl.replace("joblib_job", "joblib_job_old", 1))
        conn.execute(f"INSERT INTO joblib_job_old SELECT {columns} FROM joblib_job")
        for index in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'joblib_job' "
            "AND sql IS NOT NULL"
        ).fetchall():
            conn.execute(f"DROP INDEX {index[0]}")
        conn.execute("DROP TABLE joblib_job")
        conn.execute("ALTER TABLE joblib_job_old RENAME TO joblib_job")
        for name in NEW_INDEXES:
            conn.execute(f"DROP INDEX {name}")


async def _downgrade(app: FastAPI, backend: str, url: str) -> None:
    async with app.state.engine.begin() as conn:  # made before migrations: no revision
        await conn.run_sync(lambda sync: sync.execute(text("DROP TABLE joblib_alembic_version")))
        for table in ("provider_read", "provider_result", "provider"):  # came with 0002
            drop = text(f"DROP TABLE joblib_{table}")
            await conn.run_sync(lambda sync, drop=drop: sync.execute(drop))
    if backend == "sqlite":
        _downgrade_sqlite(str(make_url(url).database))
        return
    async with app.state.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE joblib_job DROP COLUMN owner_id"))
        for name in NEW_INDEXES:
            await conn.execute(text(f"DROP INDEX {name}"))


async def _shape(app: FastAPI) -> tuple[set[str], set[str]]:
    async with app.state.engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: (
                {c["name"] for c in inspect(sync).get_columns("joblib_job")},
                {i["name"] for i in inspect(sync).get_indexes("joblib_task")},
            )
        )


async def test_an_older_database_is_upgraded(
    app: FastAPI, backend, settings, as_alice, as_admin, flow, problem
) -> None:
    job = await flow.job(as_alice)
    await _downgrade(app, backend, settings.database_url)
    columns, indexes = await _shape(app)
    assert "owner_id" not in columns
    assert not set(NEW_INDEXES) & indexes

    assert await current(app.state.engine) is None
    # adopted as revision 0001 (the schema migrations started from), then migrated on
    assert await ensure_schema(app.state.engine, migrate=True) == "upgraded"
    assert await current(app.state.engine) == head_revision()
    columns, indexes = await _shape(app)
    assert "owner_id" in columns
    assert set(NEW_INDEXES) <= indexes
    # the old job has no owner now: superusers only
    problem(await as_alice.put(f"{P}/rooms/lab/jobs", json=BODY), 403, "forbidden")
    again = await as_admin.put(f"{P}/rooms/lab/jobs", json=BODY)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == job["id"]
    assert await ensure_schema(app.state.engine) == "current"  # a second start changes nothing
    columns, indexes = await _shape(app)
    assert "owner_id" in columns
