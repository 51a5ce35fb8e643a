"""PostgreSQL: the tasks table is vacuumed in the background after many claims."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from zndraw_joblib_server.storage import get_database
from zndraw_joblib_server.storage.upkeep import ClaimUpkeep

pytestmark = pytest.mark.backends("postgres")


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"vacuum_after_claims": 3}


async def _vacuumed(app: FastAPI) -> bool:
    async with app.state.session_maker() as session:
        found = await session.execute(
            text(
                "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables "
                "WHERE relname = 'joblib_task'"
            )
        )
        return bool(found.scalar())


async def test_claims_start_a_vacuum_every_so_many(
    app: FastAPI, as_alice: httpx.AsyncClient, flow
) -> None:
    """Three claimed tasks (the setting) vacuum the tasks table once; two more do not."""
    db = get_database(app.state.session_maker, app.state.joblib_settings)
    job = await flow.job(as_alice, name="Churn")
    worker = str(job["worker_id"])
    for _ in range(5):
        await flow.submit(as_alice, job["full_name"])
    assert not await _vacuumed(app)
    for _ in range(2):
        assert await flow.claim(as_alice, worker) is not None
    await asyncio.sleep(0.2)
    assert db.upkeep.vacuums == 0
    assert await flow.claim(as_alice, worker) is not None
    for _ in range(100):
        if db.upkeep.vacuums:
            break
        await asyncio.sleep(0.05)
    assert db.upkeep.vacuums == 1
    for _ in range(100):  # the statistics may trail the vacuum a little
        if await _vacuumed(app):
            break
        await asyncio.sleep(0.05)
    assert await _vacuumed(app)
    for _ in range(2):
        assert await flow.claim(as_alice, worker) is not None
    await asyncio.sleep(0.2)
    assert db.upkeep.vacuums == 1


async def test_no_vacuum_when_switched_off(app: FastAPI) -> None:
    """``vacuum_after_claims = 0`` leaves the table to autovacuum."""
    db = get_database(app.state.session_maker, app.state.joblib_settings)
    upkeep = ClaimUpkeep(db.engine, 0)
    upkeep.claimed(10_000)
    await asyncio.sleep(0.1)
    await upkeep.stop()
    assert upkeep.vacuums == 0
