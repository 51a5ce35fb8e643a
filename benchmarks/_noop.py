"""The no-op job of the comparison, as users serve it: ``zndraw-joblib worker _noop:Noop``."""

from __future__ import annotations

from typing import Any

from zndraw_joblib_client import Extension

__all__ = ["Noop"]


class Noop(Extension):
    """Does nothing: the queue's own cost per task is what is measured."""

    category = "analysis"
    n: int = 0
    """The producer's sequence number (the benchmark's submitters send one)."""

    def run(self, task: Any = None, **kwargs: Any) -> None:
        """Return at once."""
