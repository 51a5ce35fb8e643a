"""Prebuilt statements run from SQL compiled once: on the driver itself where possible.

Executing a Core statement through SQLAlchemy does work per statement before the driver
sees it (cache key, cache lookup, execution context, parameter processing, result
metadata) that costs several times what the queue's short index lookups cost SQLite
itself. For the statements of the hot paths, built once with
:func:`~zndraw_joblib_server.storage.prebuilt.prebuilt`, that work is the same every time,
so :func:`direct_plan` does it once: SQLAlchemy compiles the statement for the
connection's dialect (``stmt.compile(dialect=...)``), and the plan keeps the SQL, the order
of its parameters, and the type processors SQLAlchemy itself would apply to each parameter
and result column (so values are stored and read exactly as through SQLAlchemy).

Running a plan is then one call on the driver's public API (``sqlite3.Connection.execute``
on an inline SQLite connection, asyncpg's ``Connection.fetch`` outside a transaction, see
:mod:`.direct_pg`) and a loop over the values; elsewhere (in a PostgreSQL transaction,
aiosqlite's thread, an engine with listeners such as a host's tracing) the plan's SQL runs
through SQLAlchemy's ``exec_driver_sql``, which every listener sees. The statement runs on
the session's own connection, inside its transaction (an inline connection opens it on
SQLAlchemy's ``begin``). Driver errors are wrapped in SQLAlchemy's exception classes
(``IntegrityError`` stays ``IntegrityError``). Statements a plan does not cover (not
prebuilt, parameters SQLAlchemy renders at execution) run through SQLAlchemy as usual.
"""

from __future__ import annotations

import collections
import re
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import exc
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.types import TupleType

from zndraw_joblib_server.storage.direct_result import DirectResult
from zndraw_joblib_server.storage.prebuilt import prebuilt_mark

__all__ = [
    "Bound",
    "DirectResult",
    "DirectStatements",
    "Plan",
    "SharesRuns",
    "direct_of",
    "direct_plan",
]

_KEY = "zndraw_joblib.direct"
_POSTCOMPILE = re.compile(r"__\[POSTCOMPILE_(\w+)\]")
_MISSING: Any = object()

Processor = Callable[[Any], Any] | None
Bound = tuple[str, Any, bool]
"""A statement bound to its parameters: SQL, the driver's values, whether executemany."""


class Plan:
    """One prebuilt statement compiled for a dialect: SQL, parameter order, type processors.

    Two parameter styles: SQLite's ``?`` (values in order of appearance, a list expanded
    in place) and asyncpg's ``$n`` (each parameter once, numbered in order, the members of
    expanded lists numbered after all the others, as SQLAlchemy numbers them).
    """

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        binds = compiled.binds
        self._sql: str = compiled.string
        names = tuple(compiled.positiontup or ())
        self._numbered = dialect.paramstyle == "numeric_dollar"
        self._expanding = tuple(dict.fromkeys(n for n in names if binds[n].expanding))
        if self._numbered:  # the plain parameters, then the lists' members
            names = tuple(n for n in names if not binds[n].expanding) + self._expanding
        self._names: tuple[str, ...] = names
        # Each list member is written as SQLAlchemy writes it (with its type's cast, where
        # the dialect renders casts: asyncpg's ``$3::UUID``).
        mark = "$%d" if self._numbered else "?"
        self._marks: dict[str, str] = {}
        for name in self._expanding:
            bind_type = binds[name].type
            impl = bind_type.dialect_impl(dialect)
            casts = dialect.bind_typing is BindTyping.RENDER_CASTS and impl.render_bind_cast
            self._marks[name] = compiled.render_bind_cast(bind_type, impl, mark) if casts else mark
        # Only plain lists are expanded here; SQLAlchemy renders the rest at execution.
        rendered = set(_POSTCOMPILE.findall(self._sql))
        self.usable: bool = (
            dialect.paramstyle in ("qmark", "numeric_dollar")
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
        self._dialect = dialect
        self._columns = list(stmt.exported_columns)
        self._column_keys = tuple(col.key for col in self._columns)
        self.returns_rows: bool = bool(self._columns)
        """Whether the statement answers rows (a query, or ``RETURNING``)."""
        marked = prebuilt_mark(stmt)
        rows_of = None if marked is None else marked.rows_of
        self.rows_of: tuple[str, str] | None = (
            rows_of
            if rows_of is not None
            and rows_of[0] in self._names
            and rows_of[1] in self._column_keys
            else None
        )
        """Whose rows are whose when runs share a round trip (see ``prebuilt``), or None."""
        self._sqls: dict[tuple[int, ...], str] = {}
        self._row: type[tuple[Any, ...]] | None = None
        self._keys: tuple[str, ...] = ()
        self._active: list[tuple[int, Callable[[Any], Any]]] = []

    def shape(self, params: Mapping[str, Any]) -> str | None:
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
            members: dict[str, str] = {}
            number = len(self._names) - len(self._expanding) + 1  # numbered: after the rest
            for name, size in zip(self._expanding, lengths, strict=True):
                mark = self._marks[name]
                if self._numbered:
                    members[name] = ", ".join(mark % (number + i) for i in range(size))
                    number += size
                else:
                    members[name] = ", ".join([mark] * size)
            sql = _POSTCOMPILE.sub(lambda m: members[m.group(1)], self._sql)
            if len(self._sqls) < 64:
                self._sqls[lengths] = sql
        return sql

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        """The driver's parameter values for ``params``, in order, processed by type."""
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

    def bind(self, params: Any) -> Bound | None:
        """The SQL and the driver's values for ``params``, and whether it is executemany.

        ``params`` is a mapping (the values: one list), or a list of them (the values: a
        list per mapping, executemany). None for what only SQLAlchemy renders (an empty
        list for an expanding parameter).
        """
        many = isinstance(params, list)
        first: Mapping[str, Any] = (params[0] if params else {}) if many else (params or {})
        sql = self.shape(first)
        if sql is None:
            return None
        return sql, [self.values(p) for p in params] if many else self.values(first), many

    def run_sqlite(self, conn: sqlite3.Connection, bound: Bound, params: Any) -> DirectResult:
        """Execute ``bound`` (see :meth:`bind`) on the ``sqlite3`` connection ``conn``.

        Driver errors are raised as SQLAlchemy raises them (``params``: for the message).
        """
        sql, values, many = bound
        try:
            cursor = conn.executemany(sql, values) if many else conn.execute(sql, values)
            raw = cursor.fetchall() if cursor.description else []
        except sqlite3.Error as error:
            raise exc.DBAPIError.instance(sql, params, error, sqlite3.Error) from error
        if not cursor.description:
            return DirectResult((), [], cursor.rowcount)
        if not self.learned:
            self.learn([(d[0], d[1]) for d in cursor.description])
        return self.result(raw, cursor.rowcount)

    def adopt(self, result: Any) -> DirectResult:
        """The rows of ``result`` (SQLAlchemy's, of :meth:`bind`'s SQL run as driver SQL).

        SQLAlchemy processes no values of SQL it did not compile: they are processed here,
        as for a statement run on the driver.
        """
        if not result.returns_rows:
            return self.empty(result.rowcount)
        if not self.learned:
            self.learn([(d[0], d[1]) for d in result.cursor.description])
        return self.result(result.fetchall(), result.rowcount)

    @property
    def learned(self) -> bool:
        """Whether the result's columns are known (see :meth:`learn`)."""
        return self._row is not None

    def learn(self, description: list[tuple[str, Any]]) -> None:
        """Learn the result's columns from the driver: each one's name and type code.

        Rows are then named tuples, and each column's value goes through the result
        processor SQLAlchemy picks for its type and the driver's type code.
        """
        if len(self._columns) != len(description):  # pragma: no cover - exported = result
            raise RuntimeError("a direct statement returned columns it does not export")
        dialect = self._dialect
        self._keys = tuple(name for name, _code in description)
        self._row = collections.namedtuple("Row", self._keys, rename=True)  # type: ignore[misc]
        processors = [
            col.type.dialect_impl(dialect).result_processor(dialect, code)
            for col, (_name, code) in zip(self._columns, description, strict=True)
        ]
        self._active = [(i, p) for i, p in enumerate(processors) if p is not None]

    def result(self, raw: list[Any], rowcount: int) -> DirectResult:
        """The driver's rows as a result of processed values (columns learnt first)."""
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
        return DirectResult(self._keys, rows, rowcount)

    def empty(self, rowcount: int) -> DirectResult:
        """A result without rows.

        Its keys are the exported columns' until a run has shown the driver's.
        """
        return DirectResult(self._keys or self._column_keys, [], rowcount)


def direct_plan(stmt: Any, dialect: Any) -> Plan | None:
    """The plan of a prebuilt statement for ``dialect`` (made on first use), else None.

    Plans are kept by the statement's mark (see :mod:`.prebuilt`), by dialect. None for
    a statement that is not prebuilt, or whose parameters SQLAlchemy renders at execution.
    """
    mark = prebuilt_mark(stmt)
    if mark is None:
        return None
    plans = mark.plans
    key = f"{dialect.name}+{dialect.driver}"
    if key not in plans:
        plan = Plan(stmt, dialect)
        plans[key] = plan if plan.usable else None
    return plans[key]  # type: ignore[no-any-return]


class SharesRuns(Protocol):
    """Runs statements with ``rows_of``, letting concurrent runs share a round trip."""

    async def run(self, conn: Any, plan: Plan, bound: Bound, params: Any) -> DirectResult | None:
        """Run ``bound`` on ``conn``; None, doing nothing, off asyncpg or in a transaction."""


class DirectStatements:
    """Runs prebuilt statements of one database straight on its driver, where it may.

    That is: inline SQLite connections, and asyncpg connections outside a transaction (see
    :mod:`.direct_pg`). Owned by the database handle, which hands it to its sessions
    (:meth:`attach`); sessions without one run every statement through SQLAlchemy.

    Args:
        count: Called for every statement run directly; it must also be the engine's one
            ``before_cursor_execute`` listener (counting the statements SQLAlchemy runs).
            With any other execution listener on the engine (cursor, statement or error
            events: a host's tracing, say) every statement goes through SQLAlchemy, so
            the listener sees it.
        shared: Lets concurrent runs of a statement with ``rows_of`` share a round trip.
    """

    __slots__ = ("count", "shared")

    def __init__(self, count: Callable[[], None], shared: SharesRuns) -> None:
        self.count = count
        """The statement counter."""
        self.shared = shared
        """Queues concurrent runs of statements with ``rows_of`` on PostgreSQL."""

    def attach(self, session: Any) -> None:
        """Let :func:`~zndraw_joblib_server.storage.execute.execute` find this for ``session``."""
        session.info[_KEY] = self

    def counter(self, engine: Any) -> Callable[[], None] | None:
        """The statement counter when statements on ``engine`` may run directly, else None.

        None when a listener other than the counter would miss statements run directly.
        """
        dispatch = engine.dispatch
        observed = (
            len(dispatch.before_cursor_execute) != 1
            or dispatch.after_cursor_execute
            or dispatch.before_execute
            or dispatch.after_execute
            or engine.dialect.dispatch.handle_error
        )
        return None if observed else self.count


def direct_of(session: Any) -> DirectStatements | None:
    """The :class:`DirectStatements` attached to ``session``, if any."""
    found: DirectStatements | None = session.info.get(_KEY)
    return found
