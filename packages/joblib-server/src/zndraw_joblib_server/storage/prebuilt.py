"""Statements built once, whose SQL this package compiles once per dialect.

SQLAlchemy finds a statement's compiled SQL in its cache by a key it derives from the
statement's whole structure, on every execution: for the hot paths' statements (the claim,
the queue position, the locked load) that costs more than running them on SQLite. A
statement marked with :func:`prebuilt` is instead compiled by :mod:`.direct` once per
dialect into a plan (SQL text, parameter order, type processors) kept by the mark itself,
and run from that plan on every execution.

The mark rides on the statement as a user-defined execution option (SQLAlchemy's public
way to carry data on a statement). Statements derived from a prebuilt one (``.where()``,
``.limit()``...) copy their options, so the mark names the very statement it was made
for: a derived statement is not prebuilt and runs through SQLAlchemy as usual.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["BY_ID", "BY_WORKER", "Prebuilt", "is_prebuilt", "prebuilt", "prebuilt_mark"]

S = TypeVar("S")

_OPTION = "zndraw_joblib_prebuilt"

BY_WORKER = ("b_worker", "worker_id")
"""``rows_of`` of a worker's statements: each row is its worker's (see :func:`prebuilt`)."""
BY_ID = ("id", "id")
"""``rows_of`` of an insert that answers its new row's id."""


class Prebuilt:
    """The mark of one prebuilt statement: the statement, and its plans by dialect."""

    __slots__ = ("plans", "rows_of", "statement")

    def __init__(self, rows_of: tuple[str, str] | None = None) -> None:
        self.statement: Any = None
        """The statement this mark was made for (set once, by :func:`prebuilt`)."""
        self.plans: dict[str, Any] = {}
        """Plans by ``dialect+driver`` (made by :mod:`.direct` on first use; None: unusable)."""
        self.rows_of = rows_of
        """(parameter, column): each row answered is the run's whose parameter is its column."""


def prebuilt(stmt: S, *, rows_of: tuple[str, str] | None = None) -> S:
    """``stmt`` marked to be compiled once per dialect, not looked up on every execution.

    Returns a new statement (``stmt`` itself is left as it was). Statements derived from it
    later (``.where()``, ``.limit()``...) are not prebuilt. ``rows_of`` (a parameter and a
    column, such as :data:`BY_WORKER`): every row the statement answers belongs to the run
    whose value of that parameter is the row's value of that column, so concurrent runs
    with different values may share a round trip (see :mod:`.shared_pg`).
    """
    mark = Prebuilt(rows_of)
    marked: Any = stmt.execution_options(**{_OPTION: mark})  # type: ignore[attr-defined]
    mark.statement = marked
    return marked  # type: ignore[no-any-return]


def prebuilt_mark(stmt: Any) -> Prebuilt | None:
    """The mark of ``stmt`` when it is the very statement :func:`prebuilt` returned."""
    options = getattr(stmt, "get_execution_options", None)
    if options is None:
        return None
    mark = options().get(_OPTION)
    return mark if mark is not None and mark.statement is stmt else None


def is_prebuilt(stmt: Any) -> bool:
    """Whether ``stmt`` is the very statement :func:`prebuilt` returned (not one derived)."""
    return prebuilt_mark(stmt) is not None
