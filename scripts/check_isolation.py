"""Check that a package imports cleanly in an environment that lacks a forbidden stack.

Run it inside an isolated environment (a nox session that installed only one package and
its declared dependencies)::

    python scripts/check_isolation.py zndraw_joblib_client --forbid fastapi starlette

It fails (exit code 1) when any forbidden module is installed at all, when the package or
any of its submodules cannot be imported (for example because a module imports something the
package does not declare), or when importing the package pulled in a forbidden module.
Modules named ``__main__`` are not imported, since importing them runs a program.

Only the standard library is used, so the script runs in any fresh environment.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys
import traceback


def find_installed(names: list[str]) -> list[str]:
    """Return the names among ``names`` that can be found by the import system.

    Args:
        names: Top-level module names.

    Returns:
        Those that are importable in this environment.
    """
    return [name for name in names if importlib.util.find_spec(name) is not None]


def _describe(exc: BaseException | None) -> str:
    """One line naming the exception and where the innermost frame raised it."""
    if exc is None:
        return "unknown error"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


_SCRIPTS = frozenset({"__main__", "env"})
"""Modules that are scripts, run by a tool rather than imported: ``__main__``, and Alembic's
``env`` (it configures the migration context Alembic sets up before running it)."""


def import_all(package: str) -> list[str]:
    """Import ``package`` and every submodule below it.

    Args:
        package: The top-level import name.

    Returns:
        One message per module that failed to import (empty when all imported).
    """
    try:
        root = importlib.import_module(package)
    except Exception as exc:
        return [f"{package}: {_describe(exc)}"]
    failures: list[str] = []
    paths = getattr(root, "__path__", None)
    if paths is None:
        return failures

    def on_error(name: str) -> None:
        failures.append(f"{name}: {_describe(sys.exc_info()[1])}")

    for info in pkgutil.walk_packages(paths, prefix=f"{package}.", onerror=on_error):
        if info.name.rsplit(".", 1)[-1] in _SCRIPTS:
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failures.append(f"{info.name}: {_describe(exc)}")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the process exit code.

    Args:
        argv: Command line arguments (``sys.argv[1:]`` when None).

    Returns:
        0 when the package is isolated from every forbidden module, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="top-level import name to check")
    parser.add_argument("--forbid", nargs="*", default=[], help="modules that must be absent")
    args = parser.parse_args(argv)

    problems: list[str] = []
    installed = find_installed(args.forbid)
    if installed:
        problems.append(f"forbidden modules are installed: {', '.join(installed)}")
    problems.extend(import_all(args.package))
    leaked = sorted(name for name in args.forbid if name in sys.modules)
    if leaked:
        problems.append(f"importing {args.package} loaded: {', '.join(leaked)}")

    if problems:
        print(f"isolation check of {args.package} FAILED:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem.rstrip()}", file=sys.stderr)
        return 1
    absent = ", ".join(args.forbid) or "nothing"
    print(f"isolation check of {args.package} passed (absent: {absent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
