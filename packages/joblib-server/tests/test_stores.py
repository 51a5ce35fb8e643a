"""Each database gets its own store, and services reach it only through the protocol."""

from __future__ import annotations

from fastapi import FastAPI

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.storage import Database, Store, get_database
from zndraw_joblib_server.storage.stores import PostgresStore, SqliteStore


def _db(app: FastAPI) -> Database:
    return get_database(app.state.session_maker, app.state.joblib_settings)


def test_both_stores_satisfy_the_protocol() -> None:
    """The protocol is runtime-checkable; both stores (and PostgreSQL's alone) satisfy it."""
    stores: list[Store] = [SqliteStore(), PostgresStore(), PostgresStore(alone=True)]
    assert all(isinstance(store, Store) for store in stores)


async def test_a_database_gets_its_dialects_store(app: FastAPI, backend: str) -> None:
    """SQLite writes are transactions only; PostgreSQL has a store for work alone too."""
    db = _db(app)
    expected = SqliteStore if backend == "sqlite" else PostgresStore
    assert isinstance(db.store, expected)
    alone = db.store.standalone()
    assert (alone is None) == (backend == "sqlite")
    if alone is not None:
        assert alone.standalone() is None


async def test_a_write_carries_the_store_of_its_mode(app: FastAPI, backend: str) -> None:
    """``standalone=True`` gets the store's alone variant where there is one, else the store."""
    db = _db(app)
    async with db.write() as uow:
        assert uow.store is db.store
    async with db.write(standalone=True) as uow:
        assert uow.store is (db.store.standalone() or db.store)
        # a submit hands its tasks to waiting claims only inside its transaction
        assert (uow.parked is not None) == (backend == "sqlite")


async def test_only_work_alone_on_postgresql_reports_in_one_statement(
    app: FastAPI, backend: str
) -> None:
    """Other stores decline a report at once, without building the statement's parameters."""
    db = _db(app)
    built: list[TaskStatus] = []

    def params() -> dict[str, object] | None:
        built.append(TaskStatus.RUNNING)
        return None  # a report the statement is not for: declined after all

    async with db.write() as uow:
        assert await uow.store.report(uow.session, TaskStatus.RUNNING, params) is None
    assert built == []
    async with db.write(standalone=True) as uow:
        assert await uow.store.report(uow.session, TaskStatus.RUNNING, params) is None
    assert built == ([TaskStatus.RUNNING] if backend == "postgres" else [])
