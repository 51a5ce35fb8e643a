"""Fixtures: the reference app on a real database (SQLite file, and PostgreSQL when set).

Every test that uses the app (or ``backend``) runs on both databases; a module limits itself
with ``pytestmark = pytest.mark.backends("postgres")`` (or ``"sqlite"``). Modules marked
``conformance`` are the behaviour tests of the hot operations: with ``--modes=pairwise`` or
``--modes=all`` (or ``ZNDRAW_JOBLIB_TEST_MODES``) they run in every mode of the settings
that choose another code path (see ``AXES`` and docs/development.md, "Testing").
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from zndraw_joblib_core import Event, TaskAvailable, TaskStatus, TaskStatusChanged
from zndraw_joblib_server import JobLibSettings, create_app
from zndraw_joblib_server.storage import get_database
from zndraw_joblib_server.testing import (
    BACKENDS,
    ApiUser,
    api_client,
    create_user,
    fresh_database_url,
    postgres_skip_message,
    running,
    test_auth_settings,
)

_HASHES: dict[str, str] = {}

# --------------------------------------------------------------------------------------
# Backends and modes
# --------------------------------------------------------------------------------------

MODES_ENV = "ZNDRAW_JOBLIB_TEST_MODES"
MODE_SETS = ("default", "pairwise", "all")


@dataclass(frozen=True)
class Axis:
    """A setting whose two values take different code paths (labels name them in test ids)."""

    setting: str
    on: str
    off: str
    default: bool = True

    def label(self, value: bool) -> str:
        """The id part of ``value``."""
        return self.on if value else self.off


AXES: dict[str, tuple[Axis, ...]] = {
    "sqlite": (
        Axis("fast_lane", "lane", "no-lane"),
        Axis("claim_handoff", "handoff", "no-handoff"),
        Axis("sqlite_inline", "inline", "aiosqlite"),
    ),
    # PostgreSQL: claims run outside a transaction (autocommit), except those a batch submit
    # hands over inside its own (claim_handoff); the write gate is off unless asked for.
    "postgres": (
        Axis("fast_lane", "lane", "no-lane"),
        Axis("claim_handoff", "handoff", "no-handoff"),
        Axis("enable_db_lock", "lock", "no-lock", default=False),
    ),
}
"""Per database, the settings the conformance suite covers (today's defaults first)."""


@dataclass(frozen=True)
class Mode:
    """Values of a backend's axes (unset: the setting's default), and the mode's id."""

    values: dict[str, bool] = field(default_factory=dict)
    id: str = "default"

    def settings(self) -> dict[str, bool]:
        """The settings the app under test is built with."""
        return dict(self.values)


DEFAULT_MODE = Mode()


def _mode(axes: tuple[Axis, ...], values: tuple[bool, ...], shown: tuple[Axis, ...]) -> Mode:
    chosen = dict(zip((a.setting for a in axes), values, strict=True))
    label = "-".join(a.label(chosen[a.setting]) for a in shown)
    return Mode(chosen, label)


def _pairwise(axes: tuple[Axis, ...]) -> list[tuple[bool, ...]]:
    """Four rows in which every pair of the three axes takes all four value pairs."""
    assert len(axes) == 3, "the pairwise set is written for three axes"
    rows = []
    for a, b in itertools.product((False, True), repeat=2):
        flips = (a, b, a != b)
        rows.append(tuple(axis.default != flip for axis, flip in zip(axes, flips, strict=True)))
    return rows


def modes_for(backend: str, which: str, vary: tuple[str, ...] = ()) -> list[Mode]:
    """The modes of ``backend`` in mode set ``which`` (``default``, ``pairwise``, ``all``).

    ``default`` is today's defaults alone, plus each value of the axes in ``vary`` (a module
    marked ``vary("fast_lane")`` runs with the lane on and off in every run).
    """
    axes = AXES[backend]
    known = {a.setting for all_axes in AXES.values() for a in all_axes}
    if set(vary) - known:
        raise pytest.UsageError(f"vary{vary}: the axes are {sorted(known)}")
    if which == "all":
        rows = list(itertools.product(*((a.default, not a.default) for a in axes)))
    elif which == "pairwise":
        rows = _pairwise(axes)
    else:
        varied = [a for a in axes if a.setting in vary]
        shown = tuple(varied)
        rows = []
        for values in itertools.product(*((a.default, not a.default) for a in varied)):
            by_name = dict(zip((a.setting for a in varied), values, strict=True))
            rows.append(tuple(by_name.get(a.setting, a.default) for a in axes))
        return [_mode(axes, row, shown) for row in rows]
    return [_mode(axes, row, axes) for row in rows]


def _is_default(backend: str, mode: Mode) -> bool:
    return all(mode.values.get(a.setting, a.default) == a.default for a in AXES[backend])


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--modes`` and ``--skip-default-mode`` (the conformance suite's modes)."""
    group = parser.getgroup("zndraw-joblib modes")
    group.addoption(
        "--modes",
        choices=MODE_SETS,
        default=None,
        help=f"modes of the tests marked conformance: default (today's defaults), pairwise "
        f"(every pair of settings values), all (every combination); default: ${MODES_ENV} "
        f"or 'default'",
    )
    group.addoption(
        "--skip-default-mode",
        action="store_true",
        help="leave out the conformance tests' default mode (a plain run covers it)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Refuse an unknown mode set, and ``--skip-default-mode`` without other modes."""
    if _mode_set(config) == "default" and config.getoption("--skip-default-mode"):
        raise pytest.UsageError("--skip-default-mode needs --modes=pairwise or --modes=all")


def _mode_set(config: pytest.Config) -> str:
    which = config.getoption("--modes") or os.environ.get(MODES_ENV) or "default"
    if which not in MODE_SETS:
        raise pytest.UsageError(f"{MODES_ENV}={which!r}: one of {', '.join(MODE_SETS)}")
    return str(which)


def _backend_param(name: str, *values: Any, id: str | None = None) -> Any:
    marks = [pytest.mark.postgres] if name == "postgres" else []
    return pytest.param(name, *values, id=id or name, marks=marks)


@pytest.hookimpl(tryfirst=True)  # first, so the ids start with the database as before
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``backend`` (and, for the conformance suite, ``mode``) from the markers.

    ``backends("postgres")`` limits a test to the databases named. Tests marked
    ``conformance`` also get the modes of the mode set chosen (without a mode, and with
    today's ids, when that is just the default).
    """
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = list(marker.args) if marker else list(BACKENDS)
    unknown = set(names) - set(BACKENDS)
    if unknown or not names:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: backends{tuple(names)}")
    conformance = metafunc.definition.get_closest_marker("conformance") is not None
    vary = metafunc.definition.get_closest_marker("vary")
    which = _mode_set(metafunc.config) if conformance else "default"
    per_backend = {n: modes_for(n, which, tuple(vary.args) if vary else ()) for n in names}
    if conformance and metafunc.config.getoption("--skip-default-mode"):
        per_backend = {
            n: [m for m in ms if not _is_default(n, m)] for n, ms in per_backend.items()
        }
    plain = all(ms == [modes_for(n, "default")[0]] for n, ms in per_backend.items())
    if plain or "mode" not in metafunc.fixturenames:
        metafunc.parametrize("backend", [_backend_param(n) for n in names], indirect=True)
        return
    params = [_backend_param(n, m, id=f"{n}-{m.id}") for n, ms in per_backend.items() for m in ms]
    metafunc.parametrize(("backend", "mode"), params, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``backends("postgres")`` marks every test under it ``postgres`` (those without a
    ``backend`` too), so ``-m postgres`` selects them."""
    for item in items:
        marker = item.get_closest_marker("backends")
        if marker is not None and tuple(marker.args) == ("postgres",):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database of the test: both, or those its ``backends`` marker names."""
    return str(request.param)


def _handed_off(batches: list[list[Event]], task_id: str) -> bool:
    for batch in batches:
        if any(isinstance(e, TaskAvailable) and str(e.task_id) == task_id for e in batch):
            return any(
                isinstance(e, TaskStatusChanged)
                and str(e.task_id) == task_id
                and e.status is TaskStatus.CLAIMED
                for e in batch
            )
    raise AssertionError(f"no TaskAvailable event for {task_id}")


@dataclass
class _Recorded:
    batches: list[list[Event]] = field(default_factory=list)
    flat: list[Event] = field(default_factory=list)


@pytest.fixture
def _recorded(app: FastAPI) -> _Recorded:
    recorded = _Recorded()

    async def sink(events: Sequence[Event]) -> None:
        recorded.batches.append(list(events))
        recorded.flat.extend(events)

    app.state.joblib_event_sink = sink
    return recorded


@pytest.fixture
def deliveries(_recorded: _Recorded) -> list[list[Event]]:
    """What the app's event sink receives: one list per delivery (committed transaction)."""
    return _recorded.batches


@pytest.fixture
def events(_recorded: _Recorded) -> list[Event]:
    """What the app's event sink receives, in order (``clear()`` it to start afresh)."""
    return _recorded.flat


@pytest.fixture
def handed_off() -> Callable[[list[list[Event]], str], bool]:
    """``handed_off(batches, task_id)``: whether the transaction that created the task (the
    event sink's batch with its ``TaskAvailable``) also claimed it: a submit's hand-off."""
    return _handed_off


@pytest.fixture
def until_waiting(app: FastAPI) -> Callable[[int], Awaitable[None]]:
    """``await until_waiting(count)``: until ``count`` long-polls of the app wait for work."""
    notifier = get_database(app.state.session_maker, app.state.joblib_settings).notifier

    async def wait(count: int) -> None:
        for _ in range(500):
            if notifier.waiting >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the long-polls never started waiting")

    return wait


@pytest.fixture
def mode(request: pytest.FixtureRequest) -> Mode:
    """The settings mode of the test (today's defaults unless the conformance run says)."""
    return getattr(request, "param", DEFAULT_MODE)


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


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> str:
    """A fresh, empty database for the test."""
    url = await fresh_database_url(backend, tmp_path)
    if url is None:
        pytest.skip(postgres_skip_message())
    return url


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings (e.g. short leases)."""
    return {}


@pytest.fixture
def settings(database_url: str, settings_overrides: dict[str, Any], mode: Mode) -> JobLibSettings:
    """Settings for the app under test (no background sweeper unless asked), in its mode."""
    values: dict[str, Any] = {"database_url": database_url, "long_poll_max_wait_seconds": 10}
    values.update(mode.settings())
    clash = {k for k, v in mode.settings().items() if settings_overrides.get(k, v) != v}
    if clash:  # the test would not run in the mode its id names
        pytest.fail(f"settings_overrides change {sorted(clash)}, which mode {mode.id} sets")
    values.update(settings_overrides)
    return JobLibSettings(**values)


def check_mode(app: FastAPI, settings: JobLibSettings) -> None:
    """Assert the app took the paths its settings choose (a mode must not fall back).

    The fast lane is installed or not, the write gate is on or off, and on SQLite the
    connections the app used are inline or aiosqlite's, as set.
    """
    lane = any(m.cls.__name__ == "FastLane" for m in app.user_middleware)
    assert lane is settings.fast_lane, f"fast lane installed: {lane}"
    db = app.state.joblib_queue.database
    gate = settings.enable_db_lock
    if gate is None:
        gate = db.dialect == "sqlite"
    assert (db.gate is not None) is gate, f"write gate: {db.gate}"
    if db.dialect == "sqlite" and db.inline is not None:
        assert db.inline is settings.sqlite_inline, f"inline SQLite: {db.inline}"


@pytest.fixture
async def app(settings: JobLibSettings, mode: Mode) -> AsyncIterator[FastAPI]:
    """The reference app with its lifespan running (tables created, no sweeper loop)."""
    application = create_app(settings, test_auth_settings(), sweeper=False)
    async with running(application):
        yield application
        if mode is not DEFAULT_MODE:
            check_mode(application, settings)


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
