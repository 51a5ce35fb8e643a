"""Check that built wheels keep the dependency direction of the workspace.

Usage::

    python scripts/check_wheels.py DIST_DIR

``DIST_DIR`` holds exactly one wheel of each of ``zndraw-joblib-core``,
``zndraw-joblib-client`` and ``zndraw-joblib-server`` (as ``uv build --all-packages`` leaves
them). The check reads each wheel's ``METADATA`` and file list and fails (exit code 1) unless:

* core requires pydantic and nothing else;
* the client requires exactly core and httpx (extras may add more, but never the server
  stack);
* the server requires core and never the client, not even through an extra;
* an ``==`` pin on core names the version of the core wheel that was built with it;
* every wheel ships only its own top-level package (plus its ``.dist-info``) and a
  ``py.typed`` marker.

Only the standard library is used, so the script runs in any fresh environment.
"""

from __future__ import annotations

import re
import sys
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

CORE, CLIENT, SERVER = "zndraw-joblib-core", "zndraw-joblib-client", "zndraw-joblib-server"

SERVER_STACK = frozenset(
    {
        "fastapi",
        "starlette",
        "sqlalchemy",
        "zndraw-auth",
        "uvicorn",
        "aiosqlite",
        "asyncpg",
        SERVER,
    }
)
"""Distributions the client must never depend on."""

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)"
    r"(?:;(?P<marker>.*))?$"
)
_EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def normalize(name: str) -> str:
    """Normalise a distribution name as PEP 503 does (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirement:
    """One ``Requires-Dist`` entry.

    Attributes:
        name: The normalised distribution name.
        spec: The version specifier, e.g. ``==0.2.0`` (may be empty).
        extra: The extra that adds it, or None for a runtime requirement.
    """

    name: str
    spec: str
    extra: str | None


@dataclass(frozen=True)
class Wheel:
    """What the checks need to know about one wheel.

    Attributes:
        path: The wheel file.
        name: The normalised distribution name.
        version: The distribution version.
        requires: Its ``Requires-Dist`` entries.
        files: The paths inside the archive.
    """

    path: Path
    name: str
    version: str
    requires: tuple[Requirement, ...]
    files: tuple[str, ...]

    @property
    def runtime(self) -> set[str]:
        """Names required without any extra."""
        return {r.name for r in self.requires if r.extra is None}

    @property
    def every(self) -> set[str]:
        """Names required at runtime or by any extra."""
        return {r.name for r in self.requires}


def parse_requirement(line: str) -> Requirement:
    """Parse one ``Requires-Dist`` value.

    Args:
        line: For example ``asyncpg<1,>=0.30; extra == 'postgres'``.

    Returns:
        The parsed requirement.

    Raises:
        ValueError: When the line is not a requirement.
    """
    match = _REQUIREMENT.match(line)
    if match is None:
        raise ValueError(f"cannot parse requirement {line!r}")
    extra = _EXTRA.search(match["marker"] or "")
    return Requirement(
        name=normalize(match["name"]),
        spec=match["spec"].strip().replace(" ", ""),
        extra=extra.group(1) if extra else None,
    )


def read_wheel(path: Path) -> Wheel:
    """Read the metadata and file list of a wheel.

    Args:
        path: A ``.whl`` file.

    Returns:
        The wheel's facts.
    """
    with zipfile.ZipFile(path) as archive:
        files = tuple(archive.namelist())
        metadata_name = next(f for f in files if f.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(archive.read(metadata_name).decode())
    return Wheel(
        path=path,
        name=normalize(metadata["Name"]),
        version=metadata["Version"],
        requires=tuple(parse_requirement(r) for r in metadata.get_all("Requires-Dist") or []),
        files=files,
    )


def check(wheels: dict[str, Wheel]) -> list[str]:
    """Return every violation of the dependency rules (empty when all hold).

    Args:
        wheels: The wheels by normalised distribution name; must hold core, client and server.
    """
    errors: list[str] = []
    core, client, server = wheels[CORE], wheels[CLIENT], wheels[SERVER]

    if core.every != {"pydantic"}:
        errors.append(f"{CORE} must require only pydantic, requires {sorted(core.every)}")

    if client.runtime != {CORE, "httpx"}:
        errors.append(
            f"{CLIENT} must require exactly {CORE} and httpx, requires {sorted(client.runtime)}"
        )
    if bad := client.every & SERVER_STACK:
        errors.append(f"{CLIENT} must not require the server stack, requires {sorted(bad)}")

    if CORE not in server.runtime:
        errors.append(f"{SERVER} must require {CORE}")
    if CLIENT in server.every:
        errors.append(f"{SERVER} must not require {CLIENT}")

    for wheel in (client, server):
        for req in wheel.requires:
            if req.name == CORE and req.spec.startswith("==") and req.spec[2:] != core.version:
                errors.append(f"{wheel.name} pins {CORE}{req.spec}, built core is {core.version}")

    for wheel in wheels.values():
        package = wheel.name.replace("-", "_")
        dist_info = f"{package}-{wheel.version}.dist-info/"
        strays = sorted(
            {f.split("/")[0] for f in wheel.files if not f.startswith((f"{package}/", dist_info))}
        )
        if strays:
            errors.append(f"{wheel.path.name} ships unexpected top-level entries {strays}")
        if f"{package}/py.typed" not in wheel.files:
            errors.append(f"{wheel.path.name} lacks {package}/py.typed")
    return errors


def main(argv: list[str] | None = None) -> int:
    """Check the wheels in the directory given on the command line.

    Args:
        argv: Command line arguments (``sys.argv[1:]`` when None).

    Returns:
        The process exit code: 0 when every rule holds, 1 otherwise, 2 on bad usage.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    found: dict[str, list[Wheel]] = {}
    for path in sorted(Path(args[0]).glob("*.whl")):
        wheel = read_wheel(path)
        found.setdefault(wheel.name, []).append(wheel)
    for name in (CORE, CLIENT, SERVER):
        if len(found.get(name, [])) != 1:
            print(
                f"expected one wheel of {name} in {args[0]}, found {len(found.get(name, []))}",
                file=sys.stderr,
            )
            return 1
    wheels = {name: found[name][0] for name in (CORE, CLIENT, SERVER)}

    for wheel in wheels.values():
        runtime = ", ".join(sorted(wheel.runtime)) or "-"
        print(f"{wheel.path.name}: requires {runtime}")
    errors = check(wheels)
    if errors:
        print("wheel metadata check FAILED:", file=sys.stderr)
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    print("wheel metadata check passed: core <- client, core <- server, no client <-> server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
