"""Statements built once whose SQL cache key is computed once too.

SQLAlchemy finds a statement's compiled SQL in its cache by a key it derives from the
statement's whole structure, on every execution: for the hot paths' statements (the claim,
the queue position, the locked load) that costs more than running them on SQLite.
SQLAlchemy statements are immutable (their generative methods return new statements), so one
built once at import always derives the same key: :func:`prebuilt` derives it once.

This leans on SQLAlchemy's ``_generate_cache_key`` (a private method, stable through 2.0;
the workspace pins ``sqlalchemy<2.1``). The tests run every prebuilt statement on both
databases.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["is_prebuilt", "prebuilt"]

S = TypeVar("S")

_MEMO = "_zndraw_joblib_cache_key"
_FROZEN: dict[type, type] = {}


class _KeyedOnce:
    """Mixin: answer the cache key computed by :func:`prebuilt` (for that very object)."""

    def _generate_cache_key(self) -> Any:
        if is_prebuilt(self):
            return self.__dict__[_MEMO][1]
        # A statement derived from a prebuilt one (generative methods copy the attributes)
        # has structure of its own: derive its key as usual.
        return super()._generate_cache_key()  # type: ignore[misc]


def prebuilt(stmt: S) -> S:
    """A copy of ``stmt`` that computes its SQL cache key once, not on every execution.

    Statements derived from the copy later (``.where()``, ``.limit()``...) compute their own
    key as usual.

    Raises:
        ValueError: ``stmt`` cannot be cached by SQLAlchemy at all (some construct in it
            opts out), so it would be compiled on every execution.
    """
    original: Any = stmt
    cls = type(original)
    keyed = _FROZEN.get(cls)
    if keyed is None:
        keyed = type(cls.__name__, (_KeyedOnce, cls), {"inherit_cache": True})
        _FROZEN[cls] = keyed
    copy: Any = object.__new__(keyed)
    copy.__dict__ = dict(original.__dict__)
    key = super(_KeyedOnce, copy)._generate_cache_key()
    if key is None:  # SQLAlchemy would compile it on every execution: a hot-path bug
        raise ValueError(f"{type(original).__name__} opts out of SQLAlchemy's SQL cache")
    copy.__dict__[_MEMO] = (id(copy), key)
    return copy  # type: ignore[no-any-return]


def is_prebuilt(stmt: Any) -> bool:
    """Whether ``stmt`` is the very object :func:`prebuilt` returned (not one derived from it)."""
    memo = stmt.__dict__.get(_MEMO)
    return memo is not None and memo[0] == id(stmt)
