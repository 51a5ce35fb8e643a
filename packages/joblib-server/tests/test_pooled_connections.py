"""PostgreSQL: pooled connections that die (a database restart, an idle timeout).

Connections are pinged before reuse only after sitting idle (``DB_PING_IDLE_SECONDS``), or
replaced at once when the driver saw them close; a database that cannot be reached answers
503 problems, never 500.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from zndraw_joblib_server.dependencies import get_async_session_maker
from zndraw_joblib_server.storage import create_engine

pytestmark = pytest.mark.backends("postgres")

P = "/v1/joblib"
_KILL_OTHERS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def _kill_other_connections(app: FastAPI) -> None:
    async with app.state.session_maker() as session:
        killed = (await session.execute(text(_KILL_OTHERS))).scalar()
    assert killed, "no pooled connection to kill"
    await asyncio.sleep(0.2)  # the backends exit


async def _warm_pool(client: httpx.AsyncClient, room: str) -> None:
    """Several concurrent requests, so the pool holds several connections."""
    answers = await asyncio.gather(*(client.get(f"{P}/rooms/{room}/tasks") for _ in range(6)))
    assert all(a.status_code == 200 for a in answers)


@pytest.mark.parametrize(
    "settings_overrides", [{"db_ping_idle_seconds": 0.1, "user_cache_seconds": 0}]
)
async def test_connections_killed_while_idle_are_replaced_unnoticed(
    app: FastAPI, as_alice: httpx.AsyncClient, register
) -> None:
    job = await register(room="pool", name="Idle", client=as_alice)
    await _warm_pool(as_alice, "pool")
    await _kill_other_connections(app)
    await asyncio.sleep(0.2)  # longer than DB_PING_IDLE_SECONDS: every connection is pinged
    for _ in range(8):
        listed = await as_alice.get(f"{P}/rooms/pool/tasks")
        assert listed.status_code == 200, listed.text
    submitted = await as_alice.post(f"{P}/rooms/pool/tasks/{job['full_name']}", json={})
    assert submitted.status_code == 202, submitted.text


def _closed_port_url(_database_url: str) -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nowhere"


def _no_connections_left_url(database_url: str) -> str:
    """The test database, as a role PostgreSQL refuses with 'too many connections'."""
    url = make_url(database_url).set(username=_LIMITED_ROLE, password=None)
    return url.render_as_string(hide_password=False)


_LIMITED_ROLE = "zndraw_joblib_no_connections"
_CREATE_LIMITED_ROLE = (
    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
    f"'{_LIMITED_ROLE}') THEN CREATE ROLE {_LIMITED_ROLE} LOGIN CONNECTION LIMIT 0; "
    "END IF; END $$"
)


@pytest.mark.parametrize("away_url", [_closed_port_url, _no_connections_left_url])
async def test_an_unreachable_database_answers_503_and_writes_nothing(
    app: FastAPI, as_alice: httpx.AsyncClient, register, problem, database_url: str, away_url
) -> None:
    job = await register(room="pool", name="Away", client=as_alice)
    async with app.state.session_maker() as session:
        await session.execute(text(_CREATE_LIMITED_ROLE))
        await session.commit()
    away = create_engine(away_url(database_url))
    app.dependency_overrides[get_async_session_maker] = lambda: async_sessionmaker(away)
    try:
        requests = [
            (f"rooms/pool/tasks/{job['full_name']}", {}),
            ("tasks/claim", {"worker_id": job["worker_id"]}),
        ]
        for path, body in requests:
            resp = await as_alice.post(f"{P}/{path}", json=body)
            problem(resp, 503, "service-unavailable")
            assert resp.headers["Retry-After"] == "1"
    finally:
        app.dependency_overrides.clear()
        await away.dispose()
    listed = await as_alice.get(f"{P}/rooms/pool/tasks")
    assert listed.status_code == 200
    assert listed.json()["total"] == 0
