"""Fixtures: the reference app on a real database (SQLite file, and PostgreSQL when set)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from zndraw_joblib_server import JobLibSettings, create_app
from zndraw_joblib_server.testing import (
    ApiUser,
    api_client,
    create_user,
    database_url_for,
    postgres_skip_message,
    reset_postgres,
    running,
    test_auth_settings,
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of the test (every server test runs on both)."""
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> str:
    """A fresh, empty database for the test."""
    url = database_url_for(backend, tmp_path)
    if url is None:
        pytest.skip(postgres_skip_message())
    if backend == "postgres":
        await reset_postgres(url)
    return url


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings (e.g. short leases)."""
    return {}


@pytest.fixture
def settings(database_url: str, settings_overrides: dict[str, Any]) -> JobLibSettings:
    """Settings for the app under test (no background sweeper unless asked)."""
    values: dict[str, Any] = {"database_url": database_url, "long_poll_max_wait_seconds": 10}
    values.update(settings_overrides)
    return JobLibSettings(**values)


@pytest.fixture
async def app(settings: JobLibSettings) -> AsyncIterator[FastAPI]:
    """The reference app with its lifespan running (tables created, no sweeper loop)."""
    application = create_app(settings, test_auth_settings(), sweeper=False)
    async with running(application):
        yield application


@pytest.fixture
async def alice(app: FastAPI) -> ApiUser:
    """A regular user."""
    return await create_user(app, "alice@example.com")


@pytest.fixture
async def bob(app: FastAPI) -> ApiUser:
    """Another regular user."""
    return await create_user(app, "bob@example.com")


@pytest.fixture
async def admin(app: FastAPI) -> ApiUser:
    """A superuser."""
    return await create_user(app, "root@example.com", superuser=True)


ClientFactory = Callable[[ApiUser | None], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_for(app: FastAPI) -> ClientFactory:
    """``async with client_for(user) as c:`` an in-process client authenticated as ``user``."""

    def factory(user: ApiUser | None) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return api_client(app, user)

    return factory


@pytest.fixture
async def as_alice(app: FastAPI, alice: ApiUser) -> AsyncIterator[httpx.AsyncClient]:
    """A client authenticated as alice."""
    async with api_client(app, alice) as client:
        yield client


@pytest.fixture
async def as_bob(app: FastAPI, bob: ApiUser) -> AsyncIterator[httpx.AsyncClient]:
    """A client authenticated as bob."""
    async with api_client(app, bob) as client:
        yield client


@pytest.fixture
async def as_admin(app: FastAPI, admin: ApiUser) -> AsyncIterator[httpx.AsyncClient]:
    """A client authenticated as a superuser."""
    async with api_client(app, admin) as client:
        yield client


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client without credentials."""
    async with api_client(app, None) as client:
        yield client


Registrar = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def register(as_admin: httpx.AsyncClient) -> Registrar:
    """Register a job and return the JobResponse body (as superuser, for @global)."""

    async def _register(
        room: str = "@global",
        name: str = "Rotate",
        category: str = "modifiers",
        schema: dict[str, Any] | None = None,
        client: httpx.AsyncClient | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"category": category, "name": name, "schema": schema or {}}
        if worker_id:
            body["worker_id"] = worker_id
        resp = await (client or as_admin).put(f"/v1/joblib/rooms/{room}/jobs", json=body)
        assert resp.status_code in (200, 201), resp.text
        return dict(resp.json())

    return _register
