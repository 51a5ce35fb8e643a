"""Which tables the queue's migrations own, and where they keep their revision."""

from __future__ import annotations

from typing import Any

__all__ = [
    "KEPT_COUNT_TABLES",
    "UNCOMPARED_INDEXES",
    "VERSION_TABLE",
    "include_name",
    "include_object",
    "owned_table",
]

VERSION_TABLE = "joblib_alembic_version"
"""The queue's own Alembic version table (a host's ``alembic_version`` stays untouched)."""

KEPT_COUNT_TABLES = frozenset({"joblib_job_pending", "joblib_job_pending_pg"})
"""Tables the migrations create by plain DDL (the kept pending counts), not in the models."""


def owned_table(name: str | None) -> bool:
    """Whether the table ``name`` is one of the queue's model tables."""
    return bool(
        name
        and name.startswith("joblib_")
        and name != VERSION_TABLE
        and name not in KEPT_COUNT_TABLES
    )


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook: compare the queue's model tables only."""
    return type_ != "table" or owned_table(name)


UNCOMPARED_INDEXES = frozenset({"ix_joblib_task_claim"})
"""Indexes on an expression (``priority DESC``): Alembic cannot compare them on SQLite and
would propose dropping them; the CI test compares them by name instead."""


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object`` hook: leave zndraw-auth's and a host's tables out."""
    if type_ == "index":
        return name not in UNCOMPARED_INDEXES
    return include_name(name, type_, None)
