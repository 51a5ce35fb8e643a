"""Statements built once: their SQL cache key is derived once, and they must be cacheable."""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy import column, select, table
from sqlalchemy.sql.expression import ColumnElement

from zndraw_joblib_server.storage.prebuilt import prebuilt


class _Opaque(ColumnElement[int]):
    """A construct that does not declare how to cache itself (SQLAlchemy opts it out)."""

    __visit_name__ = "opaque"


def test_a_cacheable_statement_keeps_its_key() -> None:
    stmt = prebuilt(select(column("a")).select_from(table("t")))
    assert stmt._generate_cache_key() is stmt._generate_cache_key()
    derived = stmt.where(column("a") == 1)
    assert derived._generate_cache_key() != stmt._generate_cache_key()


def test_an_uncacheable_statement_is_refused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy warns about the opted-out class too
        with pytest.raises(ValueError, match="SQL cache"):
            prebuilt(select(_Opaque()))
