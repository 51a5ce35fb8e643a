"""Providers: the provider registry, the database result cache and reads in flight.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Types are written out (not taken from the models): UUIDs native on PostgreSQL and
``CHAR(32)`` on SQLite, user ids as zndraw-auth's ``GUID``, timestamps ``timestamptz``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from fastapi_users_db_sqlalchemy.generics import GUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _stamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _create_per_read(table: str, *columns: sa.Column[Any]) -> None:
    """Create ``table``: one row per read of one provider, ``columns`` besides that key."""
    op.create_table(
        table,
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(["provider_id"], ["joblib_provider.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("provider_id", "request_hash"),
    )


def upgrade() -> None:
    """Create the provider tables."""
    op.create_table(
        "joblib_provider",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("worker_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", GUID(), nullable=False),
        sa.Column("created_at", _stamp(), nullable=False),
        sa.ForeignKeyConstraint(["worker_id"], ["joblib_worker.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("room_id", "category", "name", name="uq_joblib_provider_name"),
    )
    op.create_index("ix_joblib_provider_room", "joblib_provider", ["room_id", "created_at"])
    op.create_index("ix_joblib_provider_worker_id", "joblib_provider", ["worker_id"])
    op.create_index("ix_joblib_provider_user_id", "joblib_provider", ["user_id"])
    _create_per_read(
        "joblib_provider_result",
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _stamp(), nullable=False),
        sa.Column("expires_at", _stamp(), nullable=False),
    )
    for column in ("created_at", "expires_at"):
        op.create_index(f"ix_joblib_provider_result_{column}", "joblib_provider_result", [column])
    _create_per_read(
        "joblib_provider_read",
        sa.Column("worker_id", sa.Uuid(), nullable=False),
        sa.Column("provider_name", sa.Text(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", _stamp(), nullable=False),
        sa.Column("expires_at", _stamp(), nullable=False),
        sa.Column("dispatched_at", _stamp(), nullable=True),
    )
    op.create_index(
        "ix_joblib_provider_read_worker", "joblib_provider_read", ["worker_id", "dispatched_at"]
    )
    op.create_index("ix_joblib_provider_read_expires_at", "joblib_provider_read", ["expires_at"])


def downgrade() -> None:
    """Drop the provider tables (registrations and cached results are live data only)."""
    for table in ("joblib_provider_read", "joblib_provider_result", "joblib_provider"):
        op.drop_table(table)
