"""Check a database URL before serving, so a bad one ends in one clear line.

Without this check a wrong URL fails deep inside SQLAlchemy or the app's start-up, as a
long traceback that rarely says what to change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import exc, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from zndraw_joblib_server.storage.engine import is_memory_sqlite, with_async_driver

__all__ = ["DatabaseUnusable", "check_database"]

_EXAMPLES = "sqlite+aiosqlite:///PATH.db or postgresql+asyncpg://USER:PASSWORD@HOST:PORT/NAME"
_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}


class DatabaseUnusable(Exception):
    """The database URL cannot be used; the message says what is wrong and what to do."""


def check_database(url: str, *, timeout: float = 10.0) -> str:
    """Check that the server can use the database at ``url``.

    Args:
        url: The database URL; one without a driver gets the async one (see
            :func:`~zndraw_joblib_server.storage.engine.with_async_driver`).
        timeout: Seconds to wait for the database to answer.

    Returns:
        The URL to use (with its driver).

    Raises:
        DatabaseUnusable: One line saying what is wrong and how to fix it.
    """
    url = with_async_driver(url.strip())
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        raise DatabaseUnusable(f"cannot read the database URL {url!r}; use {_EXAMPLES}") from error
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    shown = parsed.render_as_string(hide_password=True)
    if backend not in _DRIVERS:
        raise DatabaseUnusable(f"unsupported database {backend!r} in {shown}; use {_EXAMPLES}")
    if driver != _DRIVERS[backend]:
        raise DatabaseUnusable(
            f"the database URL {shown} names the driver {driver!r}; "
            f"use {backend}+{_DRIVERS[backend]}:// instead"
        )
    if backend == "sqlite" and not is_memory_sqlite(url):
        folder = Path(parsed.database or "").expanduser().absolute().parent
        if not folder.is_dir():
            raise DatabaseUnusable(
                f"the folder {folder} of the SQLite database does not exist; "
                f"create it (mkdir -p {folder}) or choose another path"
            )
    try:
        asyncio.run(asyncio.wait_for(_probe(url), timeout))
    except TimeoutError as error:
        raise DatabaseUnusable(
            f"the database at {_where(parsed)} did not answer within {timeout:g} s; "
            "is it running and reachable?"
        ) from error
    except Exception as error:  # every driver has its own errors: explain the common ones
        raise DatabaseUnusable(_explain(parsed, _root(error))) from error
    return url


async def _probe(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def _root(error: BaseException) -> BaseException:
    """The driver's own error inside SQLAlchemy's wrapper."""
    orig = getattr(error, "orig", None)
    return orig if isinstance(orig, BaseException) else error


def _where(parsed: URL) -> str:
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.database)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _explain(parsed: URL, error: BaseException) -> str:
    name = type(error).__name__
    reason = " ".join(str(error).split()) or name
    where = _where(parsed)
    if parsed.get_backend_name() == "sqlite":
        return f"cannot open the SQLite database {where}: {reason}"
    if name == "InvalidCatalogNameError":
        return (
            f"PostgreSQL at {where} says: {reason}; create it (createdb -h {parsed.host} "
            f"-p {parsed.port or 5432} -U {parsed.username} {parsed.database}) "
            "or fix the database name in the URL"
        )
    if name in {"InvalidPasswordError", "InvalidAuthorizationSpecificationError"}:
        return f"PostgreSQL at {where} refused the login: {reason}; check user and password"
    if isinstance(error, OSError):
        return (
            f"cannot connect to PostgreSQL at {where} ({reason}); is it running, and are "
            "host and port right?"
        )
    return f"cannot use the database at {where}: {name}: {reason}"
