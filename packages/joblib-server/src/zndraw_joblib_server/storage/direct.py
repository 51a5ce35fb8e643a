"""Prebuilt statements run straight on an inline SQLite session's ``sqlite3`` connection.

Executing a Core statement through SQLAlchemy costs 30-50 us per statement before the driver
sees it (cache lookup, execution context, parameter processing, result metadata), several
times what the queue's short index lookups cost SQLite itself. For the statements of the hot
paths, built once with :func:`~zndraw_joblib_server.storage.prebuilt.prebuilt`, that work is
the same every time, so :func:`direct_plan` does it once: SQLAlchemy compiles the statement
for the connection's dialect, and the plan keeps the SQL, the order of its parameters, and
the type processors SQLAlchemy itself would apply to each parameter and result column (so
values are stored and read exactly as through SQLAlchemy). Running it is then one
``sqlite3`` call and a loop over the values.

The statement runs on the session's own connection, inside its transaction (an inline
connection opens it on SQLAlchemy's ``begin``). Driver errors are wrapped in SQLAlchemy's
exception classes, as SQLAlchemy would (``IntegrityError`` stays ``IntegrityError``).
Statements this does not handle (not prebuilt, parameters SQLAlchemy renders at
execution), and every statement of an engine with execution listeners other than the
statement counter (see :func:`enable`), run through SQLAlchemy as before.
"""

from __future__ import annotations

import collections
import re
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import exc
from sqlalchemy.types import TupleType

from zndraw_joblib_server.storage.prebuilt import is_prebuilt

__all__ = ["DirectResult", "Plan", "direct_plan", "enable", "run_direct"]

_PLANS = "_zndraw_joblib_direct"
_POSTCOMPILE = re.compile(r"__\[POSTCOMPILE_(\w+)\]")
_MISSING: Any = object()

Processor = Callable[[Any], Any] | None


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


class Plan:
    """One prebuilt statement compiled for SQLite: SQL, parameter order, type processors."""

    __slots__ = (
        "_active",
        "_binds",
        "_defaults",
        "_expanding",
        "_keys",
        "_names",
        "_results",
        "_row",
        "_sql",
        "_sqls",
        "usable",
    )

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        binds = compiled.binds
        self._sql: str = compiled.string
        self._names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self._expanding = tuple(sorted({n for n in self._names if binds[n].expanding}))
        # Only plain lists are expanded here; SQLAlchemy renders the rest at execution.
        rendered = set(_POSTCOMPILE.findall(self._sql))
        self.usable: bool = (
            dialect.paramstyle == "qmark"
            and rendered == set(self._expanding)
            and not any(
                binds[n].literal_execute or isinstance(binds[n].type, TupleType) for n in rendered
            )
        )
        """Whether the statement can run directly at all (else through SQLAlchemy)."""
        self._defaults = {
            name: bind.effective_value
            for name, bind in binds.items()
            if not bind.required and not bind.expanding
        }
        self._binds: dict[str, Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in binds.items()
        }
        columns = list(stmt.exported_columns)
        self._results: tuple[Processor, ...] = tuple(
            col.type.dialect_impl(dialect).result_processor(dialect, None) for col in columns
        )
        self._sqls: dict[tuple[int, ...], str] = {}
        self._row: type[tuple[Any, ...]] | None = None
        self._keys: tuple[str, ...] = ()
        self._active: list[tuple[int, Callable[[Any], Any]]] = []

    def _shape(self, params: Mapping[str, Any]) -> str | None:
        """The SQL for the lengths of this call's expanding lists.

        None for an empty list, which SQLAlchemy renders as an empty set.
        """
        if not self._expanding:
            return self._sql
        lengths = tuple(len(params[name]) for name in self._expanding)
        sql = self._sqls.get(lengths)
        if sql is None:
            if 0 in lengths:
                return None
            sized = dict(zip(self._expanding, lengths, strict=True))
            sql = _POSTCOMPILE.sub(lambda m: ", ".join("?" * sized[m.group(1)]), self._sql)
            if len(self._sqls) < 64:
                self._sqls[lengths] = sql
        return sql

    def _values(self, params: Mapping[str, Any]) -> list[Any]:
        values: list[Any] = []
        binds = self._binds
        for name in self._names:
            value = params.get(name, _MISSING)
            if value is _MISSING:
                value = self._defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise exc.ArgumentError(f"A value is required for bind parameter {name!r}")
            process = binds[name]
            if name in self._expanding:
                values.extend(process(v) if process else v for v in value)
            else:
                values.append(process(value) if process else value)
        return values

    def run(self, conn: sqlite3.Connection, params: Any) -> DirectResult | None:
        """Execute on ``conn`` with ``params`` (a mapping, or a list of them: executemany).

        None, having done nothing, for what only SQLAlchemy renders (an empty list for an
        expanding parameter).
        """
        many = isinstance(params, list)
        first: Mapping[str, Any] = (params[0] if params else {}) if many else (params or {})
        sql = self._shape(first)
        if sql is None:
            return None
        try:
            if many:
                cursor = conn.executemany(sql, [self._values(p) for p in params])
            else:
                cursor = conn.execute(sql, self._values(first))
            raw = cursor.fetchall() if cursor.description else []
        except sqlite3.Error as error:
            raise exc.DBAPIError.instance(sql, params, error, sqlite3.Error) from error
        if not cursor.description:
            return DirectResult((), [], cursor.rowcount)
        if self._row is None:
            self._shape_rows(tuple(d[0] for d in cursor.description))
        make = self._row._make  # type: ignore[union-attr]
        active = self._active
        rows = []
        for row in raw:
            if active:
                values = list(row)
                for i, process in active:
                    values[i] = process(values[i])
                row = values
            rows.append(make(row))
        return DirectResult(self._keys, rows, cursor.rowcount)

    def _shape_rows(self, keys: tuple[str, ...]) -> None:
        """Learn the result's column names (on the first run): rows are named tuples."""
        if len(self._results) != len(keys):  # pragma: no cover - exported columns are the result's
            raise RuntimeError("a direct statement returned columns it does not export")
        self._keys = keys
        self._row = collections.namedtuple("Row", keys, rename=True)  # type: ignore[misc]
        self._active = [(i, p) for i, p in enumerate(self._results) if p is not None]


def direct_plan(stmt: Any, dialect: Any) -> Plan | None:
    """The plan of a prebuilt statement for ``dialect`` (made on first use), else None.

    Plans are kept on the statement itself. A statement derived from it later copies its
    attributes, plans included, but is not prebuilt itself, so it never gets here.
    """
    if not is_prebuilt(stmt):
        return None
    plans: dict[str, Plan | None] = stmt.__dict__.setdefault(_PLANS, {})
    if dialect.name not in plans:
        plan = Plan(stmt, dialect)
        plans[dialect.name] = plan if plan.usable else None
    return plans[dialect.name]


_COUNTERS: weakref.WeakKeyDictionary[Any, Callable[[], None]] = weakref.WeakKeyDictionary()


def enable(engine: Any, count: Callable[[], None]) -> None:
    """Run prebuilt statements directly on ``engine``'s inline connections.

    Args:
        engine: The synchronous engine (``AsyncEngine.sync_engine``).
        count: Called for every statement run directly; it must also be the engine's one
            ``before_cursor_execute`` listener (counting the statements SQLAlchemy runs).
            With any other execution listener on the engine (cursor, statement or error
            events: a host's tracing, say) every statement goes through SQLAlchemy, so
            the listener sees it.
    """
    _COUNTERS[engine] = count


def _observed(engine: Any) -> bool:
    """Whether a listener other than the counter would miss statements run directly."""
    dispatch = engine.dispatch
    return bool(
        len(dispatch.before_cursor_execute) != 1
        or dispatch.after_cursor_execute
        or dispatch.before_execute
        or dispatch.after_execute
        or engine.dialect.dispatch.handle_error
    )


def run_direct(sync: Any, stmt: Any, params: Any) -> DirectResult | None:
    """Run ``stmt`` directly on the inline SQLAlchemy connection ``sync``.

    None, having done nothing, when it must go through SQLAlchemy instead (see
    :func:`enable`).
    """
    engine = sync.engine
    count = _COUNTERS.get(engine)
    if count is None:
        return None
    if _observed(engine):
        return None
    plan = direct_plan(stmt, sync.dialect)
    if plan is None:
        return None
    # The sqlite3 connection under SQLAlchemy's adapter of the inline connection.
    result = plan.run(sync.connection.dbapi_connection._connection._conn, params)
    if result is not None:
        count()
    return result
