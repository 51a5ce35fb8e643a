"""A host's session maker need not be an ``async_sessionmaker``.

ZnDraw, for one, replaces ``app.state.session_maker`` with an async context manager that
holds a lock around an ``async_sessionmaker``'s session; the queue must keep working (it
takes the engine and makes its own sessions), with one database handle, so a submit still
wakes a waiting claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from zndraw_joblib_server import JobLibSettings, JobQueue, create_engine
from zndraw_joblib_server.testing import running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

P = "/v1/joblib"


def locked(maker: async_sessionmaker[AsyncSession]) -> Any:
    """A session maker wrapped in a lock, as ZnDraw does on SQLite."""
    lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def locked_session_maker() -> AsyncIterator[AsyncSession]:
        async with lock, maker() as session:
            yield session

    return locked_session_maker


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"claim_poll_interval_seconds": 600}  # only a wake-up answers a waiting claim


@pytest.fixture(params=["replaced-after-mount", "given-with-engine", "plain-function"])
def wiring(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def fast_lane(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def app(settings: JobLibSettings, wiring: str, fast_lane: bool) -> AsyncIterator[FastAPI]:
    engine = create_engine(settings.database_url)
    plain = async_sessionmaker(engine, expire_on_commit=False)
    if wiring == "replaced-after-mount":
        queue = JobQueue(settings, engine=engine, session_maker=plain, sweeper=False)
    elif wiring == "given-with-engine":
        queue = JobQueue(settings, engine=engine, session_maker=locked(plain), sweeper=False)
    else:
        queue = JobQueue(settings, session_maker=lambda: plain(), sweeper=False)
    host = FastAPI(lifespan=queue.lifespan)
    host.state.auth_settings = auth_settings()
    queue.include_in(host, fast_lane=fast_lane)
    if wiring == "replaced-after-mount":
        host.state.session_maker = locked(plain)
    try:
        async with running(host):
            yield host
    finally:
        await engine.dispose()


async def test_the_queue_works_with_the_hosts_session_maker(
    as_alice: httpx.AsyncClient, as_bob: httpx.AsyncClient
) -> None:
    worker = await as_alice.post(f"{P}/workers")
    assert worker.status_code == 201, worker.text
    worker_id = worker.json()["id"]
    job = await as_alice.put(
        f"{P}/rooms/lab/jobs",
        json={"category": "modifiers", "name": "Scale", "schema": {}, "worker_id": worker_id},
    )
    assert job.status_code == 201, job.text

    async def claim() -> httpx.Response:
        return await as_alice.post(
            f"{P}/tasks/claim",
            json={"worker_id": worker_id},
            headers={"Prefer": "wait=8"},
        )

    waiting = asyncio.create_task(claim())
    await asyncio.sleep(0.3)  # the claim is waiting (the submit must wake it, not a re-check)
    submit = await as_bob.post(f"{P}/rooms/lab/tasks/lab:modifiers:Scale", json={})
    assert submit.status_code == 202, submit.text
    claimed = await waiting
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["task"]["id"] == submit.json()["id"]
    read = await as_bob.get(f"{P}/tasks/{submit.json()['id']}")
    assert read.json()["status"] == "claimed"


def test_a_maker_whose_engine_cannot_be_seen_needs_the_engine(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(TypeError, match="engine="):
        JobQueue(JobLibSettings(), session_maker=locked(async_sessionmaker(engine)))
