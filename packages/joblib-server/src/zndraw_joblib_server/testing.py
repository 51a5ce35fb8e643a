"""Helpers for testing a host app (and this package) against a real database.

Used by the project's own tests; hosts may use them too::

    url = await fresh_database_url("sqlite", tmp_path)   # or "postgres" (None: not set up)
    app = create_app(JobLibSettings(database_url=url), test_auth_settings(), sweeper=False)
    async with running(app):
        alice = await create_user(app, "alice@example.com")
        async with api_client(app, alice) as client:
            await client.post("/v1/joblib/workers")

PostgreSQL tests read ``ZNDRAW_JOBLIB_TEST_POSTGRES_URL`` and skip without it, unless
``ZNDRAW_JOBLIB_REQUIRE_POSTGRES=1`` is set (as CI does), in which case they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi_users.password import PasswordHelper
from pydantic import SecretStr
from sqlalchemy import text
from zndraw_auth import AuthSettings, User
from zndraw_auth.users import get_jwt_strategy

from zndraw_joblib_server.lane import FastLane

__all__ = [
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "BACKENDS",
    "POSTGRES_ENV",
    "REQUIRE_POSTGRES_ENV",
    "TEST_SECRET",
    "ApiUser",
    "api_client",
    "create_user",
    "database_url_for",
    "fast_lane_of",
    "fresh_database_url",
    "hostile_jobs",
    "many_patterns_schema",
    "postgres_skip_message",
    "postgres_url",
    "reset_postgres",
    "running",
    "test_auth_settings",
]

BACKENDS = ("sqlite", "postgres")
"""The databases the helpers know (the ``backend`` argument of :func:`database_url_for`)."""

POSTGRES_ENV = "ZNDRAW_JOBLIB_TEST_POSTGRES_URL"
"""Environment variable naming the PostgreSQL database tests may use (and wipe)."""

REQUIRE_POSTGRES_ENV = "ZNDRAW_JOBLIB_REQUIRE_POSTGRES"
"""Set to 1 to make missing PostgreSQL an error instead of a skip."""

TEST_SECRET = "zndraw-joblib-test-secret-0123456789abcdef"
"""The token secret of :func:`test_auth_settings` (long enough for production mode)."""

ADMIN_EMAIL = "admin@example.com"
"""The default superuser of :func:`test_auth_settings` (give it to a served app as
``ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL`` to log in as it over HTTP)."""

ADMIN_PASSWORD = "admin-password"
"""That superuser's password (``ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD``)."""


def postgres_url() -> str | None:
    """The PostgreSQL test URL, or None (tests then skip, or fail when it is required)."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
        raise RuntimeError(f"{REQUIRE_POSTGRES_ENV}=1 but {POSTGRES_ENV} is not set")
    return None


def postgres_skip_message() -> str:
    """Why PostgreSQL tests were skipped, and how to enable them."""
    return (
        "PostgreSQL tests skipped: set ZNDRAW_JOBLIB_TEST_POSTGRES_URL="
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test (a database the tests may wipe) "
        "to run them."
    )


def database_url_for(backend: str, tmp_path: Path, *, filename: str = "joblib.db") -> str | None:
    """A database URL for ``backend``.

    ``sqlite``: file ``filename`` in ``tmp_path``; ``postgres``: the test URL, or None without
    one.
    """
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / filename}"
    return postgres_url()


async def fresh_database_url(
    backend: str, tmp_path: Path, *, filename: str = "joblib.db"
) -> str | None:
    """An empty database for one test: :func:`database_url_for`, PostgreSQL's wiped first.

    None when PostgreSQL is asked for and not configured (skip the test with
    :func:`postgres_skip_message`); a RuntimeError when it is required and not configured.
    From synchronous code (a fixture starting a server process, say) run it with
    ``asyncio.run``.
    """
    url = database_url_for(backend, tmp_path, filename=filename)
    if url is not None and backend == "postgres":
        await reset_postgres(url)
    return url


def test_auth_settings(**overrides: object) -> AuthSettings:
    """zndraw-auth settings for tests: a long secret, production mode (no auto-superusers)."""
    values: dict[str, object] = {
        "secret_key": SecretStr(TEST_SECRET),
        "default_admin_email": ADMIN_EMAIL,
        "default_admin_password": SecretStr(ADMIN_PASSWORD),
        **overrides,
    }
    return AuthSettings(**values)


async def reset_postgres(url: str) -> None:
    """Drop every table of the test database (so each test starts empty)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run the app's lifespan (httpx's ASGI transport does not)."""
    async with app.router.lifespan_context(app):
        yield app


@dataclass(frozen=True)
class ApiUser:
    """A user of the test database with a valid bearer token.

    Attributes:
        id: The user's id.
        email: The user's email.
        token: A JWT for the user.
        is_superuser: Whether the user is a superuser.
    """

    id: uuid.UUID
    email: str
    token: str
    is_superuser: bool

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header."""
        return {"Authorization": f"Bearer {self.token}"}


async def create_user(app: FastAPI, email: str, *, superuser: bool = False) -> ApiUser:
    """Insert a user into the app's database and mint a token for it."""
    settings: AuthSettings = app.state.auth_settings
    user = User(
        id=uuid.uuid4(),
        email=email,
        hashed_password=PasswordHelper().hash("password"),
        is_active=True,
        is_superuser=superuser,
        is_verified=True,
    )
    async with app.state.session_maker() as session:
        session.add(user)
        await session.commit()
    token = await get_jwt_strategy(settings).write_token(user)
    return ApiUser(id=user.id, email=email, token=token, is_superuser=superuser)


@asynccontextmanager
async def api_client(
    app: FastAPI, user: ApiUser | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client bound to the app in-process, authenticated as ``user``."""
    transport = httpx.ASGITransport(app=app)
    headers = user.headers if user else {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers, timeout=30
    ) as client:
        yield client


def fast_lane_of(app: FastAPI) -> FastLane | None:
    """The app's fast lane middleware (its ``served`` counts the answers it gave), or None.

    None also before the first request: Starlette builds the middleware stack then.
    """
    node: Any = app.middleware_stack
    while node is not None:
        if isinstance(node, FastLane):
            return node
        node = getattr(node, "app", None)
    return None


def hostile_jobs() -> dict[str, tuple[dict[str, Any], Any]]:
    """Job schemas that are costly to validate against, each with a payload that makes it so.

    ``redos``: a backtracking ``pattern`` (the payload is refused); ``recursive``: a
    recursive ``anyOf`` that takes time exponential in the payload's nesting to refuse it;
    ``unique``: ``uniqueItems`` over 20,000 objects (valid); ``enum``: 1,000 values (the
    payload is refused; meant to be sent many times in one batch). Used by the server's
    tests and ``benchmarks/bench.py --scenario hostile``.
    """
    branch = {"type": "array", "items": {"$ref": "#/$defs/t"}}
    recursive = {
        "type": "object",
        "properties": {"x": {"$ref": "#/$defs/t"}},
        "$defs": {"t": {"anyOf": [branch, dict(branch), {"type": "integer"}]}},
    }
    nested: Any = "s"
    for _ in range(40):
        nested = [nested]
    return {
        "redos": (_props(s={"type": "string", "pattern": "^(a+)+$"}), {"s": "a" * 40 + "!"}),
        "recursive": (recursive, {"x": nested}),
        "unique": (
            _props(u={"type": "array", "uniqueItems": True}),
            {"u": [{"k": i} for i in range(20_000)]},
        ),
        "enum": (_props(e={"enum": [f"v{i}" for i in range(1_000)]}), {"e": "nope"}),
    }


def many_patterns_schema(count: int = 3_000) -> dict[str, Any]:
    """A valid schema of ``count`` string properties with a ``pattern`` each (costly to check)."""
    return _props(**{f"p{i}": {"type": "string", "pattern": "^[a-z]+$"} for i in range(count)})


def _props(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}
