"""The jobs a client serves: extension class, room and ``run`` keyword arguments of each."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from zndraw_joblib_client.extension import Extension

__all__ = ["Registration", "Registry"]


@dataclass(frozen=True)
class Registration:
    """One job registered by this client.

    Attributes:
        cls: The extension class.
        room: The room the job was registered in.
        run_kwargs: Keyword arguments passed to the extension's ``run`` (e.g. a loaded model).
    """

    cls: type[Extension]
    room: str
    run_kwargs: Mapping[str, Any] = field(default_factory=dict)


class Registry:
    """Thread-safe map from a job's full name to its :class:`Registration`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Registration] = {}

    def add(self, full_name: str, registration: Registration) -> None:
        """Remember (or replace) the registration of ``full_name``."""
        with self._lock:
            self._entries[full_name] = registration

    def get(self, full_name: str) -> Registration | None:
        """The registration of ``full_name``, or None when this client has none."""
        with self._lock:
            return self._entries.get(full_name)

    def clear(self) -> None:
        """Forget every registration."""
        with self._lock:
            self._entries.clear()

    def values(self) -> list[Registration]:
        """A snapshot of every registration."""
        with self._lock:
            return list(self._entries.values())

    def __delitem__(self, full_name: str) -> None:
        with self._lock:
            del self._entries[full_name]

    def __contains__(self, full_name: object) -> bool:
        with self._lock:
            return full_name in self._entries

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._entries))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
