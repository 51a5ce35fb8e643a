"""Statements built once: compiled once per dialect, by this package, through public APIs."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import column, select, table
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import asyncpg

from zndraw_joblib_server.storage.direct import direct_plan
from zndraw_joblib_server.storage.prebuilt import is_prebuilt, prebuilt

SOURCE = Path(__file__).parents[1] / "src" / "zndraw_joblib_server"

FORBIDDEN = {
    r"\b_generate_cache_key\b": "SQLAlchemy's private cache key",
    r"\b_post_values_clause\b": "an insert's private ON CONFLICT slot",
    r"__class__\s*=(?!=)": "re-classing an object (a driver adapter)",
    r"\._conn\b": "aiosqlite's private sqlite3 connection",
    r"\b_handle_exception\b": "SQLAlchemy's asyncpg adapter's private error translation",
    r"(?<!\w)_connection\.": "a driver adapter's private connection",
    r"\bawait_\s*=": "the greenlet bridge of a driver adapter",
    r"\b_is_url_file_db\b": "a dialect's private helper",
    r"\b(dbapi|driver)_connection\._": "a driver's private attribute",
}
"""What the server's source may not contain (outside comments), and why."""


def test_a_prebuilt_statement_is_compiled_once_per_dialect() -> None:
    stmt = prebuilt(select(column("a")).select_from(table("t")).where(column("a") == 1))
    assert is_prebuilt(stmt)
    for dialect in (sqlite.dialect(), asyncpg.dialect()):
        plan = direct_plan(stmt, dialect)
        assert plan is not None
        assert direct_plan(stmt, dialect) is plan
    assert direct_plan(stmt, sqlite.dialect()) is not direct_plan(stmt, asyncpg.dialect())


def test_a_derived_statement_is_not_prebuilt() -> None:
    base = select(column("a")).select_from(table("t"))
    stmt = prebuilt(base)
    assert not is_prebuilt(base)
    derived = stmt.where(column("a") == 1)
    assert not is_prebuilt(derived)
    assert direct_plan(derived, sqlite.dialect()) is None


def test_the_server_uses_no_private_driver_or_sqlalchemy_api() -> None:
    """The hot paths once leaned on SQLAlchemy's and the drivers' private attributes
    (issue 18); none may come back."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            found += [
                f"{path.relative_to(SOURCE)}:{number}: {why}"
                for pattern, why in FORBIDDEN.items()
                if re.search(pattern, code)
            ]
    assert found == []
