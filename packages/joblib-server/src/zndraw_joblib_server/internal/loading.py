"""Import an internal extension class from a ``module:Class`` path."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_extension"]


def load_extension(path: str) -> type[Any]:
    """The class ``path`` names (``package.module:Class``).

    Raises:
        ValueError: ``path`` is not of that form, or names no class.
        ImportError: The module cannot be imported.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:Class', got {path!r}")
    found = getattr(importlib.import_module(module_name), attr, None)
    if not isinstance(found, type):
        raise ValueError(f"{path!r} names no class")
    return found
