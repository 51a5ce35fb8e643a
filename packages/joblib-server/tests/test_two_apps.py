"""Two apps in one process share no state: caches, hints and auth belong to each app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from zndraw_joblib_server import InternalProvider, JobLibSettings, JobQueue, create_app
from zndraw_joblib_server.auth import auth_of
from zndraw_joblib_server.testing import api_client, create_user, running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

PREFIX = "/v1/joblib"
SCHEMA = {"type": "object", "properties": {"angle": {"type": "number"}}}


@pytest.fixture
async def other(tmp_path: Path) -> AsyncIterator[FastAPI]:
    """A second reference app: its own SQLite database and its own settings."""
    settings = JobLibSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'other.db'}",
        schema_cache_bytes=1_000_000,
        user_cache_seconds=30,
    )
    application = create_app(settings, auth_settings(), sweeper=False)
    async with running(application):
        yield application


async def test_two_apps_share_no_cache(app: FastAPI, other: FastAPI) -> None:
    alice = await create_user(app, "alice@example.com")
    async with api_client(app, alice) as client:
        registered = await client.put(
            f"{PREFIX}/rooms/lab/jobs",
            json={"category": "modifiers", "name": "Rotate", "schema": SCHEMA},
        )
        assert registered.status_code == 201, registered.text
        submitted = await client.post(
            f"{PREFIX}/rooms/lab/tasks/lab:modifiers:Rotate", json={"payload": {"angle": 1}}
        )
        assert submitted.status_code == 202, submitted.text
    text = json.dumps(SCHEMA, separators=(",", ":"))
    mine = app.state.joblib_queue.database.caches
    theirs = other.state.joblib_queue.database.caches
    assert mine is not theirs
    assert mine.schemas.get(text) is not None  # compiled once, kept for the payloads
    assert theirs.schemas.get(text) is None
    assert theirs.schemas.bytes == 0
    assert mine.job_names
    assert not theirs.job_names

    # The user alice authenticated as in the first app is cached there, not in the other:
    # her token (the same secret) is refused by the other app, whose users table lacks her.
    assert auth_of(app.state).users.get(alice.id) is not None
    assert auth_of(other.state) is not auth_of(app.state)
    assert auth_of(other.state).users.get(alice.id) is None
    async with api_client(other, alice) as client:
        refused = await client.get(f"{PREFIX}/rooms/lab/jobs")
    assert refused.status_code == 401, refused.text
    assert auth_of(other.state).users.get(alice.id) is None


def _host_with_files(url: str, answer: str, started: asyncio.Event) -> FastAPI:
    """A host whose ``@internal:files:listing`` provider answers ``answer`` (slowly)."""

    async def listing(params: dict[str, str]) -> dict[str, str]:
        started.set()
        await asyncio.sleep(0.3)  # still running when the other app's read arrives
        return {"from": answer, "path": params.get("path", "")}

    queue = JobQueue(
        JobLibSettings(database_url=url),
        internal_providers=[InternalProvider("files", "listing", listing)],
        sweeper=False,
    )
    host = FastAPI(lifespan=queue.lifespan)
    host.state.auth_settings = auth_settings()
    queue.include_in(host)
    return host


async def test_two_apps_run_their_own_internal_reads(tmp_path: Path) -> None:
    # The same provider name (hence the same provider id) in two apps: a read in one app
    # does not join the other's read of the same parameters while that one runs.
    started = asyncio.Event()
    first = _host_with_files(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", "a", started)
    second = _host_with_files(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", "b", asyncio.Event())
    path = f"{PREFIX}/rooms/lab/providers/@internal:files:listing?path=docs"
    async with running(first), running(second):
        reader_a = await create_user(first, "reader@example.com")
        reader_b = await create_user(second, "reader@example.com")
        async with api_client(first, reader_a) as a, api_client(second, reader_b) as b:
            reading_a = asyncio.create_task(a.get(path))
            await started.wait()
            answer_b = await b.get(path)
            answer_a = await reading_a
    assert answer_a.status_code == 200, answer_a.text
    assert answer_b.status_code == 200, answer_b.text
    assert answer_a.json() == {"from": "a", "path": "docs"}
    assert answer_b.json() == {"from": "b", "path": "docs"}
