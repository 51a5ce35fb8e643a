"""PostgreSQL: autocommit connections stay checked out between writes outside a transaction.

A kept connection is reused by the next such write; one idle for longer than the pool's
ping threshold goes back to the pool (which pings it) instead; ``Database.stop`` returns
them all.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select, text

from zndraw_joblib_server.storage import Database, create_engine, records
from zndraw_joblib_server.storage.database import session_connection
from zndraw_joblib_server.storage.kept import KEEP, KeptConnections
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import TASKS, task_param

pytestmark = pytest.mark.backends("postgres")

BY_ID = prebuilt(select(TASKS.c.id).where(TASKS.c.id == task_param("id")))


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"db_ping_idle_seconds": 0.3}


async def _backend_pid(db: Database) -> int:
    """The backend of the connection the next write outside a transaction runs on."""
    async with db.write(standalone=True) as uow:
        await records.execute(uow.session, BY_ID, {"id": uuid.uuid4()})
        conn, _ = await session_connection(uow.session)
        driver = (await conn.get_raw_connection()).driver_connection  # no transaction begun
        return int(await driver.fetchval("SELECT pg_backend_pid()"))


async def test_the_next_write_reuses_the_connection(db: Database) -> None:
    first = await _backend_pid(db)
    assert await _backend_pid(db) == first
    sessions = []
    for _ in range(2):
        async with db.write(standalone=True) as uow:
            sessions.append(uow.session)
            assert not uow.session.sync_session.identity_map  # closed in between: empty
    assert sessions[0] is sessions[1]  # kept along with its connection
    assert db.engine is not None
    assert db.engine.sync_engine.pool.checkedout() >= 1  # kept between the writes


async def test_concurrent_writes_keep_at_most_keep_connections(db: Database) -> None:
    started = asyncio.Event()

    async def write() -> None:
        async with db.write(standalone=True) as uow:
            await records.execute(uow.session, BY_ID, {"id": uuid.uuid4()})
            await started.wait()

    assert db.engine is not None
    pool = db.engine.sync_engine.pool
    before = pool.checkedout()  # the wake-ups' LISTEN and NOTIFY connections
    writers = [asyncio.create_task(write()) for _ in range(KEEP + 4)]
    await asyncio.sleep(0.2)
    started.set()
    await asyncio.gather(*writers)
    assert pool.checkedout() == before + KEEP
    await db.stop()
    assert pool.checkedout() == 0


async def test_a_connection_killed_while_kept_is_not_handed_out(db: Database) -> None:
    """Idle past the ping threshold, it is pinged by the pool, found dead and replaced."""
    pid = await _backend_pid(db)
    async with db.read() as other:
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.5)  # past db_ping_idle_seconds
    assert await _backend_pid(db) != pid


@pytest.mark.parametrize(("pool_size", "kept"), [(1, 0), (3, 1), (10, KEEP), (40, KEEP)])
async def test_a_small_pool_keeps_room_for_transactions(
    database_url: str, pool_size: int, kept: int
) -> None:
    engine = create_engine(database_url, pool_size=pool_size, max_overflow=0)
    try:
        holder = KeptConnections(engine.execution_options(isolation_level="AUTOCOMMIT"), 2.0)
        assert holder.limit == kept
        taken = [(await holder.take())[0] for _ in range(pool_size)]
        for conn in taken:
            await holder.give_back(conn)
        assert engine.sync_engine.pool.checkedout() == kept
        await holder.close()
        assert engine.sync_engine.pool.checkedout() == 0
    finally:
        await engine.dispose()
