"""Load extension classes from ``module:Class`` or ``path/to/file.py:Class`` specs."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from zndraw_joblib_client.extension import Extension

__all__ = ["load_extensions"]


def _load_module(target: str) -> ModuleType:
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ValueError(f"no such file: {target}")
        name = f"_zndraw_joblib_ext_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path:
        sys.path.insert(0, "")
    return importlib.import_module(target)


def load_extensions(spec: str) -> list[type[Extension]]:
    """Import the extension classes a spec names.

    Args:
        spec: ``module:Class`` or ``file.py:Class``; without ``:Class`` every concrete
            :class:`Extension` subclass defined in the module.

    Returns:
        The classes, in definition order.

    Raises:
        ValueError: The module, file or class does not exist or is not an extension.
    """
    target, _, attr = spec.partition(":")
    if spec.count(":") > 1 or not target:
        raise ValueError(f"bad extension spec {spec!r}: use module:Class or file.py:Class")
    try:
        module = _load_module(target)
    except ImportError as exc:
        raise ValueError(f"cannot import {target!r}: {exc}") from exc
    if attr:
        cls = getattr(module, attr, None)
        if not (inspect.isclass(cls) and issubclass(cls, Extension)):
            raise ValueError(f"{spec!r} is not an Extension subclass")
        return [cls]
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Extension)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    if not found:
        raise ValueError(f"no Extension subclass in {target!r}")
    return found
