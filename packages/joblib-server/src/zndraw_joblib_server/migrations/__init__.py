"""Schema migrations of the queue's own tables (Alembic, shipped with the server).

The revision is kept in ``joblib_alembic_version``, so a host's own Alembic history is
never touched, and only ``joblib_*`` tables are managed. zndraw-auth's ``user`` table,
which the queue's tables refer to, is created when missing (zndraw-auth has no migrations).

At start (:func:`ensure_schema`, run by the server and by
:meth:`~zndraw_joblib_server.JobQueue.start`):

* a database with none of the queue's tables is brought to the newest revision (nothing
  to lose);
* one whose tables were made by ``create_all`` before migrations existed (no
  ``joblib_alembic_version``) gets the last ad-hoc fix-up those versions ran at every
  start and is stamped as revision 0001, the schema they had;
* one behind the code's revision is upgraded only when asked (``migrate=True``,
  ``serve --migrate``, ``zndraw-joblib-server db upgrade``); otherwise
  :class:`SchemaNotCurrent` says which command to run.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine
from zndraw_auth import Base, User

from zndraw_joblib_server.migrations import legacy
from zndraw_joblib_server.migrations.runner import (
    current_revision,
    head_revision,
    known_revision,
    run_command,
    run_locked,
)
from zndraw_joblib_server.migrations.scope import VERSION_TABLE, owned_table
from zndraw_joblib_server.models import Task

__all__ = [
    "VERSION_TABLE",
    "SchemaNotCurrent",
    "current",
    "downgrade",
    "ensure_schema",
    "head_revision",
    "upgrade",
]

logger = logging.getLogger("zndraw_joblib_server")

UPGRADE_HINT = "back up the database, then run 'zndraw-joblib-server db upgrade'"


class SchemaNotCurrent(RuntimeError):
    """The database's schema is not the one this code needs; the message says what to do."""


def _bootstrap(conn: Connection) -> str | None:
    """Create zndraw-auth's ``user`` table if missing; adopt a pre-migrations database.

    Returns:
        The database's revision (None: it has none of the queue's tables).
    """
    User.__table__.create(conn, checkfirst=True)
    revision = current_revision(conn)
    if revision is not None:
        return revision
    if not any(owned_table(name) for name in inspect(conn).get_table_names()):
        return None
    legacy.bring_to_initial(conn)
    run_command(conn, "stamp", legacy.INITIAL)
    logger.info(
        "the queue's tables were made before migrations existed: brought up to date and "
        "stamped as revision %s",
        legacy.INITIAL,
    )
    return legacy.INITIAL


def _ensure(conn: Connection, migrate: bool) -> str:
    head = head_revision()
    revision = _bootstrap(conn)
    if revision is None:
        run_command(conn, "upgrade", "head")
        return "created"
    if revision != head:
        if not known_revision(revision):
            raise SchemaNotCurrent(
                f"the database schema is at revision {revision}, which this zndraw-joblib-server "
                f"(revision {head}) does not know: a newer version migrated it; install that "
                "version (or downgrade the database with it first)"
            )
        if not migrate:
            raise SchemaNotCurrent(
                f"the database schema is at revision {revision}, this zndraw-joblib-server "
                f"needs {head}: {UPGRADE_HINT} (or start with --migrate)"
            )
        run_command(conn, "upgrade", "head")
    # Repair and recount the kept pending counts, as every start did before migrations.
    # ``create_all`` of the (existing) tasks table creates nothing; it runs the counts' DDL
    # registered on it (``storage.pending``): missing triggers come back, the counts are
    # recounted, so a database edited by hand starts consistent.
    Base.metadata.create_all(conn, tables=[Task.__table__])
    if revision == head:
        return "current"
    logger.info("upgraded the database schema from revision %s to %s", revision, head)
    return "upgraded"


async def ensure_schema(engine: AsyncEngine, *, migrate: bool = False) -> str:
    """Make sure the database has the schema this code needs (see the module docs).

    Several processes starting together do this one after the other (an advisory lock on
    PostgreSQL, a lock file beside a SQLite file), so the schema is migrated once.

    Args:
        engine: The queue's engine.
        migrate: Upgrade an existing database that is behind the code's revision.

    Returns:
        ``"created"`` (a fresh database), ``"upgraded"``, or ``"current"``.

    Raises:
        SchemaNotCurrent: The database is behind and ``migrate`` is off, or it was migrated
            by a newer version.
    """
    return await run_locked(engine, lambda conn: _ensure(conn, migrate))


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database to ``revision`` (creating the tables of a fresh one).

    Returns:
        The revisions before and after.
    """
    return await _move(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> tuple[str | None, str | None]:
    """Downgrade the database to ``revision`` (``base`` drops the queue's tables).

    Returns:
        The revisions before and after.
    """
    return await _move(engine, "downgrade", revision)


async def _move(engine: AsyncEngine, command: str, revision: str) -> tuple[str | None, str | None]:
    def work(conn: Connection) -> tuple[str | None, str | None]:
        before = _bootstrap(conn)
        run_command(conn, command, revision)
        return before, current_revision(conn)

    return await run_locked(engine, work)


async def current(engine: AsyncEngine) -> str | None:
    """The database's revision (None: no queue tables, or made before migrations)."""
    return await run_locked(engine, current_revision)
