"""Notice when the SQLite file under a running server is deleted, replaced or made read-only.

An open SQLite connection keeps writing into its file even after the file was unlinked (or
made read-only, or replaced by another file): commits succeed into an inode nobody will
ever open again. :class:`FileWatch` compares the path with the file the server opened (one
``stat`` call, about a microsecond) so ``/health`` reports it and writes refuse with 503
instead of acknowledging work that is already lost.
"""

from __future__ import annotations

import os

from sqlalchemy import make_url

from zndraw_joblib_core import ServiceUnavailable

__all__ = ["FileWatch", "sqlite_file_of"]


def sqlite_file_of(url: str) -> str | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class FileWatch:
    """The SQLite database file, as opened, and checks that it is still that file.

    Args:
        path: The database file (it need not exist yet: the first check that finds it
            remembers it).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None

    def problem(self) -> str | None:
        """Why the file cannot take writes now, or None when it can."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            if self._identity is None:
                return None  # not created yet
            return f"The database file {self.path} was deleted while the server was running."
        except OSError as exc:
            return f"The database file {self.path} cannot be examined: {exc.strerror}."
        identity = (found.st_dev, found.st_ino)
        if self._identity is None:
            self._identity = identity
        elif identity != self._identity:
            return f"The database file {self.path} was replaced while the server was running."
        # No write bit at all counts too: root may write anyway, but the file was meant
        # to be read-only (and a read-only mount fails os.access for root as well).
        if not found.st_mode & 0o222 or not os.access(self.path, os.W_OK):
            return f"The database file {self.path} is read-only."
        return None

    def check(self) -> None:
        """Raise 503 when :meth:`problem` finds one.

        Raises:
            ServiceUnavailable: The file was deleted, replaced or made read-only.
        """
        problem = self.problem()
        if problem is not None:
            raise ServiceUnavailable(problem, headers={"Retry-After": "5"})
