"""The schema of zndraw-joblib-server 0.2.0: jobs, workers, links, tasks, kept counts.

Revision ID: 0001
Revises:
Create Date: 2026-12-03

Types are written out here (not taken from the models, which move on): UUIDs native on
PostgreSQL and ``CHAR(32)`` on SQLite, user ids as zndraw-auth's ``GUID``, timestamps
``timestamptz`` (naive UTC text on SQLite). The ``user`` table is zndraw-auth's and must
exist before this revision runs.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import sqlalchemy as sa
from alembic import op
from fastapi_users_db_sqlalchemy.generics import GUID

from zndraw_joblib_server.migrations import counts_0001

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATUSES = ("pending", "claimed", "running", "completed", "failed", "cancelled")
_ACTIVE = "status IN ('claimed', 'running')"
_FINISHED = "status IN ('completed', 'failed', 'cancelled')"
_PENDING = "status = 'pending'"


def _when(condition: str) -> dict[str, Any]:
    """A partial index's condition on both databases."""
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


INDEXES: list[tuple[str, str, list[sa.TextClause | str], dict[str, Any]]] = [
    ("ix_joblib_job_room_listing", "joblib_job", ["room_id", "deleted", "created_at"], {}),
    ("ix_joblib_worker_created_at", "joblib_worker", ["created_at"], {}),
    ("ix_joblib_worker_last_heartbeat", "joblib_worker", ["last_heartbeat"], {}),
    ("ix_joblib_worker_user_id", "joblib_worker", ["user_id"], {}),
    ("ix_joblib_worker_job_link_job_id", "joblib_worker_job_link", ["job_id"], {}),
    (
        "ix_joblib_task_claim",
        "joblib_task",
        ["job_id", sa.text("priority DESC"), "run_after", "created_at"],
        _when(_PENDING),
    ),
    ("ix_joblib_task_room", "joblib_task", ["room_id", "created_at"], {}),
    ("ix_joblib_task_room_status", "joblib_task", ["room_id", "status", "created_at"], {}),
    ("ix_joblib_task_job_room", "joblib_task", ["job_id", "room_id", "created_at"], {}),
    ("ix_joblib_task_worker_active", "joblib_task", ["worker_id"], _when(_ACTIVE)),
    ("ix_joblib_task_lease", "joblib_task", ["lease_expires_at"], _when(_ACTIVE)),
    ("ix_joblib_task_deadline", "joblib_task", ["deadline_at"], _when(_ACTIVE)),
    ("ix_joblib_task_user_pending", "joblib_task", ["created_by_id"], _when(_PENDING)),
    ("ix_joblib_task_finished", "joblib_task", ["completed_at"], _when(_FINISHED)),
    ("ix_joblib_task_created_by_id", "joblib_task", ["created_by_id"], {}),
]
"""The indexes, in creation order: name, table, columns, partial condition."""


def _stamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the queue's tables, indexes, and the kept pending counts."""
    op.create_table(
        "joblib_job",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("owner_id", GUID(), nullable=True),
        sa.Column("created_at", _stamp(), nullable=False),
        sa.Column("updated_at", _stamp(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["user.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("room_id", "category", "name", name="uq_joblib_job_name"),
    )
    op.create_table(
        "joblib_worker",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", GUID(), nullable=False),
        sa.Column("created_at", _stamp(), nullable=False),
        sa.Column("last_heartbeat", _stamp(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "joblib_task",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("created_by_id", GUID(), nullable=True),
        sa.Column("worker_id", sa.Uuid(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(*_STATUSES, name="taskstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("run_after", _stamp(), nullable=False),
        sa.Column("created_at", _stamp(), nullable=False),
        sa.Column("claimed_at", _stamp(), nullable=True),
        sa.Column("started_at", _stamp(), nullable=True),
        sa.Column("completed_at", _stamp(), nullable=True),
        sa.Column("lease_expires_at", _stamp(), nullable=True),
        sa.Column("deadline_at", _stamp(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("lease_seconds", sa.Float(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("cancel_requested_at", _stamp(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["user.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["job_id"], ["joblib_job.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "room_id", "idempotency_key", name="uq_joblib_task_idem"),
    )
    op.create_table(
        "joblib_worker_job_link",
        sa.Column("worker_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["joblib_job.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["worker_id"], ["joblib_worker.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("worker_id", "job_id"),
    )
    create_indexes()
    install_counts()


def create_indexes(skip: Container[str] = ()) -> None:
    """Create the indexes but those named in ``skip`` (also used for older databases)."""
    for name, table, parts, where in INDEXES:
        if name not in skip:
            op.create_index(name, table, parts, **where)


def install_counts() -> None:
    """Create (or repair) the kept pending counts of this database's kind, and recount."""
    dialect = op.get_bind().dialect.name
    statements = counts_0001.POSTGRESQL if dialect == "postgresql" else counts_0001.SQLITE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    """Drop the queue's tables (and with them all jobs, workers and tasks)."""
    dialect = op.get_bind().dialect.name
    for statement in counts_0001.DROP.get(dialect, []):
        op.execute(statement)
    for table in ("joblib_worker_job_link", "joblib_task", "joblib_worker", "joblib_job"):
        op.drop_table(table)
