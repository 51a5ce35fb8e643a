"""The index of a user's pending tasks only serves queries that name a user.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

``ix_joblib_task_user_pending`` covered every pending task (``status = 'pending'``), so
any query over pending tasks could use it. PostgreSQL's generic plan of the counts behind a
submit's queue position did: it read the whole index (every pending task of every job) and
filtered, a cost growing with the backlog, where a range of the claim index does. With
``created_by_id IS NOT NULL`` added, only a condition on the user (the per-user quota's
count) implies the index's and may use it. Rebuilding it reads the tasks table once; it
holds back writes to the table meanwhile (PostgreSQL: ``CREATE INDEX`` without
``CONCURRENTLY``, as revision 0001's).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NAME = "ix_joblib_task_user_pending"
_PENDING = "status = 'pending'"


def _when(condition: str) -> dict[str, Any]:
    """A partial index's condition on both databases."""
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def _rebuild(condition: str) -> None:
    op.drop_index(_NAME, table_name="joblib_task")
    op.create_index(_NAME, "joblib_task", ["created_by_id"], **_when(condition))


def upgrade() -> None:
    """Limit the index to pending tasks that have a user."""
    _rebuild(f"{_PENDING} AND created_by_id IS NOT NULL")


def downgrade() -> None:
    """Back to every pending task."""
    _rebuild(_PENDING)
