"""The rows of a statement run directly on the driver (see :mod:`.direct`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import exc

__all__ = ["DirectResult"]


class DirectResult:
    """The rows of a statement run directly, with the parts of SQLAlchemy's ``Result`` used.

    Rows are named tuples (by position and by column name, as SQLAlchemy's rows); the rows
    are fetched at once. ``scalars()`` is a plain list.
    """

    __slots__ = ("_keys", "_rows", "rowcount")

    def __init__(self, keys: tuple[str, ...], rows: list[tuple[Any, ...]], rowcount: int):
        self._keys = keys
        self._rows = rows
        self.rowcount = rowcount
        """Rows changed by the statement (as the driver reports it)."""

    def keys(self) -> tuple[str, ...]:
        """The column names."""
        return self._keys

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)

    def all(self) -> list[tuple[Any, ...]]:
        """Every row."""
        return self._rows

    def tuples(self) -> DirectResult:
        """This result (its rows are tuples already)."""
        return self

    def first(self) -> tuple[Any, ...] | None:
        """The first row, or None."""
        return self._rows[0] if self._rows else None

    def scalars(self) -> list[Any]:
        """The first column of every row."""
        return [row[0] for row in self._rows]

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        """The first column of the only row.

        Raises:
            sqlalchemy.exc.NoResultFound: No row.
            sqlalchemy.exc.MultipleResultsFound: More than one row.
        """
        if not self._rows:
            raise exc.NoResultFound("No row was found when one was required")
        return self.scalar_one_or_none()

    def scalar_one_or_none(self) -> Any:
        """The first column of the only row, or None without rows.

        Raises:
            sqlalchemy.exc.MultipleResultsFound: More than one row.
        """
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound(
                "Multiple rows were found when one or none was required"
            )
        return self._rows[0][0] if self._rows else None
