"""The generic page envelope of list endpoints."""

from __future__ import annotations

from typing import Generic, TypeVar

from zndraw_joblib_core._base import ResponseModel

__all__ = ["DEFAULT_PAGE_LIMIT", "MAX_PAGE_LIMIT", "Page"]

T = TypeVar("T")

DEFAULT_PAGE_LIMIT = 50
"""Page size when ``limit`` is not given."""

MAX_PAGE_LIMIT = 500
"""Largest accepted ``limit``; ``limit=0`` only counts."""


class Page(ResponseModel, Generic[T]):
    """One page of a listing: ``{items, total, limit, offset}``.

    Attributes:
        items: The entries of this page, newest first.
        total: How many entries match, over all pages.
        limit: The page size that was asked for.
        offset: How many matching entries were skipped.
    """

    items: list[T]
    total: int
    limit: int
    offset: int
