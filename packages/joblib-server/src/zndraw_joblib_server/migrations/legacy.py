"""Databases the queue's tables were made in by ``create_all``, before migrations existed.

Such a database has the queue's tables but no ``joblib_alembic_version``. Versions before
migrations brought their tables up to date at every start (adding ``joblib_job.owner_id``
and missing indexes); :func:`bring_to_initial` does that one last time, installs the kept
pending counts if missing, after which the database has revision 0001's schema and is
stamped with it.
"""

from __future__ import annotations

import importlib

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, inspect, text

__all__ = ["INITIAL", "bring_to_initial"]

INITIAL = "0001"
"""The revision a database made by ``create_all`` before migrations is stamped with."""


def bring_to_initial(conn: Connection) -> None:
    """Give a pre-migrations database revision 0001's columns, indexes and kept counts."""
    # Revision 0001's module (its index list and counts are reused, not copied).
    initial = importlib.import_module(f"{__package__}.versions.0001_initial")
    if "owner_id" not in {c["name"] for c in inspect(conn).get_columns("joblib_job")}:
        from fastapi_users_db_sqlalchemy.generics import GUID

        kind = GUID().compile(dialect=conn.dialect)
        # A plain ADD COLUMN (no batch rebuild on SQLite): a nullable column with a
        # reference is the one kind SQLite adds in place.
        conn.execute(
            text(
                f"ALTER TABLE joblib_job ADD COLUMN owner_id {kind} "
                'REFERENCES "user" (id) ON DELETE SET NULL'
            )
        )
    with Operations.context(MigrationContext.configure(conn)):
        initial.create_indexes(skip=_index_names(conn))
        initial.install_counts()


def _index_names(conn: Connection) -> set[str]:
    """Every index name of the database (reflection skips expression indexes on SQLite)."""
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'index'"
        if conn.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    )
    return {str(row[0]) for row in conn.execute(text(query))}
