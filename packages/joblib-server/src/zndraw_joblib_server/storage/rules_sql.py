"""The SQL encodings of :mod:`zndraw_joblib_server.domain.rules`, built from the rules.

Each is tested against the pure rule it encodes, on SQLite and PostgreSQL
(``tests/test_rules.py``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_

from zndraw_joblib_server.domain.rules import CLAIM_ORDER

__all__ = ["claim_order_by", "lease_expired_sql", "lease_held_sql", "lease_seconds_sql"]


def claim_order_by(columns: Any) -> list[Any]:
    """``ORDER BY`` terms of :data:`~zndraw_joblib_server.domain.rules.CLAIM_ORDER`.

    Args:
        columns: The column collection (``table.c``) holding the order's columns.
    """
    return [
        columns[name].desc() if descending else columns[name] for name, descending in CLAIM_ORDER
    ]


def lease_seconds_sql(own: Any, default: Any) -> Any:
    """SQL of :func:`~zndraw_joblib_server.domain.rules.lease_seconds`: own unless unset or 0."""
    return func.coalesce(func.nullif(own, 0.0), default)


def lease_expired_sql(expires_at: Any, now: Any) -> Any:
    """SQL of :func:`~zndraw_joblib_server.domain.rules.lease_expired`.

    False (not NULL) for a task without a lease end, so its negation is right too.
    """
    return and_(expires_at.is_not(None), expires_at < now)


def lease_held_sql(expires_at: Any, now: Any) -> Any:
    """SQL: the negation of :func:`lease_expired_sql` (true for a task without a lease end)."""
    return or_(expires_at.is_(None), expires_at >= now)
