"""Alembic environment of the queue's own tables (run by :mod:`zndraw_joblib_server.migrations`).

Only tables named ``joblib_*`` are managed, and the revision is kept in
``joblib_alembic_version``: a host's own tables and Alembic history are never touched.
SQLite gets batch mode (it cannot alter most of a table in place).
"""

from __future__ import annotations

from alembic import context
from zndraw_auth import Base

import zndraw_joblib_server.models  # noqa: F401  (registers the queue's tables)
from zndraw_joblib_server.migrations.scope import VERSION_TABLE, include_name, include_object

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline (SQL script) mode is not offered
    raise RuntimeError("run the queue's migrations through zndraw_joblib_server.migrations")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    include_name=include_name,
    include_object=include_object,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
