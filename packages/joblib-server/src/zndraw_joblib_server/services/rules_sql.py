"""The SQL encodings of :mod:`zndraw_joblib_server.domain.rules`, built from the rules.

Each is tested against the pure rule it encodes, on SQLite and PostgreSQL
(``tests/test_rules.py``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func

from zndraw_joblib_server.domain.rules import CLAIM_ORDER

__all__ = ["claim_order_by", "lease_seconds_sql"]


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
