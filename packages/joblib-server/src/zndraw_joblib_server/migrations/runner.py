"""Running the queue's Alembic migrations on an async engine, one process at a time.

Every command runs inside one transaction on one connection. On PostgreSQL that
transaction first takes an advisory lock, on a SQLite file a lock file beside the database
is held: of several processes starting together, one migrates and the others then find the
schema current.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import AsyncFileLock
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from zndraw_joblib_server.migrations.scope import VERSION_TABLE
from zndraw_joblib_server.storage.engine import is_memory_sqlite

__all__ = ["alembic_config", "current_revision", "head_revision", "run_command", "run_locked"]

T = TypeVar("T")

_HERE = Path(__file__).parent
_LOCK_KEY = 0x6A6F626C6962  # the key create_tables and the kept counts' DDL lock on too

# Alembic's INFO lines ("Context impl SQLiteImpl.", ...) would precede every start's output;
# the queue logs one line of its own when it changes the schema. A level set by the host
# stays.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration of the queue's migrations, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision the installed code needs (the newest one)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of this version's revisions."""
    script = ScriptDirectory.from_config(alembic_config())
    return any(rev.revision == revision for rev in script.walk_revisions())


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in the database (None: never migrated)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def run_command(connection: Connection, name: str, revision: str) -> None:
    """Run the Alembic command ``name`` (upgrade, downgrade, stamp) to ``revision``."""
    getattr(command, name)(alembic_config(connection), revision)


async def run_locked(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` on a sync connection inside a locked transaction.

    A connection in a transaction that no other process migrating the database shares.
    Commits when ``work`` returns, rolls back when it raises.
    """
    url = engine.url
    async with contextlib.AsyncExitStack() as stack:
        if engine.dialect.name == "sqlite" and not is_memory_sqlite(str(url)):
            lock = AsyncFileLock(f"{url.database or ''}.migrate.lock", thread_local=False)
            await stack.enter_async_context(lock)
        conn = await stack.enter_async_context(engine.begin())
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        return await conn.run_sync(work)
