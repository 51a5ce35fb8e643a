"""Fixtures: the reference app on a real database (SQLite file, and PostgreSQL when set)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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

_HASHES: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Put the environment back after each test: ``serve`` run in-process exports settings."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash each test password once per session (argon2 costs ~0.2 s per user otherwise).

    The cached hash is a real one, so logging in with the password still works.
    """
    from fastapi_users.password import PasswordHelper

    real = PasswordHelper.hash

    def cached(self: PasswordHelper, password: str) -> str:
        if password not in _HASHES:
            _HASHES[password] = real(self, password)
        return _HASHES[password]

    monkeypatch.setattr(PasswordHelper, "hash", cached)


@pytest.fixture
def xfail_on(backend: str, request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``xfail_on("sqlite", "server bug: ...")`` marks the test strict-xfail on one backend."""

    def mark(which: str, reason: str) -> None:
        if backend == which:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    return mark


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


# --------------------------------------------------------------------------------------
# Shared helpers for the HTTP-level test modules (exposed as fixtures: the test modules are
# imported with --import-mode=importlib and cannot import this file).
# --------------------------------------------------------------------------------------

PREFIX = "/v1/joblib"
PROBLEM_JSON = "application/problem+json"


def assert_problem(resp: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """Assert ``resp`` is an RFC 9457 problem with ``status`` (and type ``slug``)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers
    body = dict(resp.json())
    for key in ("type", "title", "status", "detail"):
        assert key in body, body
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    if slug is not None:
        assert body["type"] == f"/v1/problems/{slug}", body
    return body


@pytest.fixture
def problem() -> Callable[..., dict[str, Any]]:
    """``problem(resp, 404, "job-not-found")`` asserts an RFC 9457 answer."""
    return assert_problem


class Flow:
    """Small wrappers around the endpoints, asserting the happy-path status codes."""

    def __init__(self, admin: httpx.AsyncClient) -> None:
        self.admin = admin

    async def job(
        self,
        client: httpx.AsyncClient | None = None,
        room: str = "lab",
        name: str = "Rotate",
        *,
        category: str = "modifiers",
        schema: dict[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"category": category, "name": name, "schema": schema or {}}
        if worker_id is not None:
            body["worker_id"] = worker_id
        resp = await (client or self.admin).put(f"{PREFIX}/rooms/{room}/jobs", json=body)
        assert resp.status_code in (200, 201), resp.text
        return dict(resp.json())

    async def worker(self, client: httpx.AsyncClient) -> str:
        resp = await client.post(f"{PREFIX}/workers")
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    async def submit(
        self,
        client: httpx.AsyncClient,
        job_name: str,
        room: str = "lab",
        *,
        headers: dict[str, str] | None = None,
        expect: int = 202,
        **body: Any,
    ) -> dict[str, Any]:
        body.setdefault("payload", {})
        resp = await client.post(
            f"{PREFIX}/rooms/{room}/tasks/{job_name}", json=body, headers=headers
        )
        assert resp.status_code == expect, resp.text
        return dict(resp.json())

    async def claim(
        self, client: httpx.AsyncClient, worker_id: str, **body: Any
    ) -> dict[str, Any] | None:
        resp = await client.post(f"{PREFIX}/tasks/claim", json={"worker_id": worker_id, **body})
        assert resp.status_code == 200, resp.text
        return resp.json()["task"]

    async def patch(self, client: httpx.AsyncClient, task_id: str, **body: Any) -> httpx.Response:
        return await client.patch(f"{PREFIX}/tasks/{task_id}", json=body)

    async def move(
        self, client: httpx.AsyncClient, task_id: str, status: str, **body: Any
    ) -> dict[str, Any]:
        resp = await self.patch(client, task_id, status=status, **body)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def task(self, client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
        resp = await client.get(f"{PREFIX}/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def room_tasks(
        self, client: httpx.AsyncClient, room: str = "lab", **params: Any
    ) -> dict[str, Any]:
        resp = await client.get(f"{PREFIX}/rooms/{room}/tasks", params=params)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def claimed(
        self,
        client: httpx.AsyncClient,
        room: str = "lab",
        name: str = "Rotate",
        *,
        running: bool = False,
        **submit: Any,
    ) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """Register ``name`` in ``room`` as ``client``, submit one task and claim it.

        Returns:
            The job, the worker id and the claimed (or started) task.
        """
        job = await self.job(client, room, name)
        worker = str(job["worker_id"])
        await self.submit(client, job["full_name"], room, **submit)
        task = await self.claim(client, worker)
        assert task is not None
        if running:
            task = await self.move(client, task["id"], "running", worker_id=worker)
        return job, worker, task


@pytest.fixture
def flow(as_admin: httpx.AsyncClient) -> Flow:
    """Endpoint wrappers (``flow.job``, ``flow.submit``, ``flow.claim``, ...)."""
    return Flow(as_admin)


@pytest.fixture
def sweep(app: FastAPI) -> Callable[..., Awaitable[Any]]:
    """``await sweep()`` runs one sweeper pass with the app's settings."""
    from zndraw_joblib_server import sweep_once

    async def _sweep(sink: Any = None) -> Any:
        return await sweep_once(app.state.session_maker, app.state.joblib_settings, sink)

    return _sweep
