"""Run uv with nothing but Python 3: ``python3 tools/uv.py run nox``.

The set-up commands of the README start here, so they work on a machine whose system
Python has no pip (or refuses ``pip install``, as Debian's and Ubuntu's do) as well as under
pyenv or in a virtual environment. It runs, with the arguments given:

1. the ``uv`` on ``PATH``, if there is one that answers ``uv --version``;
2. else the copy this script fetched before (``.uv/`` in the clone, ignored by git);
3. else it fetches that copy first: the ``uv`` wheel of the pinned version for this
   platform from PyPI, checked against the SHA-256 digest PyPI lists for it, and the
   ``uv`` program taken out of it.

It uses the standard library only. ``UV_BOOTSTRAP_DIR`` moves the cache and
``UV_BOOTSTRAP_INDEX`` names another JSON API base (a mirror, or the tests' fake index).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

UV_VERSION = "0.13.9"
"""The uv release fetched when none is on PATH (any recent uv on PATH is used as it is)."""

INDEX = "https://pypi.org/pypi"
ROOT = Path(__file__).resolve().parent.parent
EXE = "uv.exe" if os.name == "nt" else "uv"


def platform_tags(system: str, machine: str, libc: str) -> tuple[str, str]:
    """The wheel platform tag's prefix and suffix, e.g. ``manylinux`` and ``_x86_64``.

    Args:
        system: ``platform.system()``.
        machine: ``platform.machine()``.
        libc: ``platform.libc_ver()[0]`` (``glibc``, or empty on musl-based Linux).

    Raises:
        SystemExit: For a platform uv publishes no wheel for.
    """
    machine = machine.lower()
    if system == "Linux":
        arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        return ("manylinux" if libc == "glibc" else "musllinux"), f"_{arch}"
    if system == "Darwin":
        return "macosx", "_arm64" if machine in ("arm64", "aarch64") else "_x86_64"
    if system == "Windows":
        return "win", "_arm64" if machine in ("arm64", "aarch64") else "_amd64"
    raise SystemExit(f"tools/uv.py: no uv wheel for {system} {machine}; install uv yourself")


def pick_wheel(files: list[dict], prefix: str, suffix: str) -> dict:
    """The release file whose platform tags match ``prefix``...``suffix``.

    Args:
        files: The ``urls`` list of PyPI's JSON API for one release.
        prefix: Platform tag prefix from :func:`platform_tags`.
        suffix: Platform tag suffix from :func:`platform_tags`.

    Raises:
        SystemExit: When the release has no such wheel.
    """
    for entry in files:
        name = entry["filename"]
        if not name.endswith(".whl"):
            continue
        tags = name[: -len(".whl")].split("-")[-1].split(".")
        if any(t.startswith(prefix) and t.endswith(suffix) for t in tags):
            return entry
    raise SystemExit(f"tools/uv.py: no uv wheel tagged {prefix}*{suffix}; install uv yourself")


def extract_uv(wheel: bytes, sha256: str, dest: Path) -> Path:
    """Check ``wheel`` against ``sha256`` and write its ``uv`` program into ``dest``.

    Raises:
        SystemExit: When the digest differs or the wheel holds no ``uv`` program.
    """
    digest = hashlib.sha256(wheel).hexdigest()
    if digest != sha256:
        raise SystemExit(f"tools/uv.py: the uv wheel's sha256 is {digest}, PyPI lists {sha256}")
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        member = next((n for n in archive.namelist() if n.endswith(f".data/scripts/{EXE}")), None)
        if member is None:
            raise SystemExit("tools/uv.py: the uv wheel holds no uv program")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / EXE
        partial = dest / f"{EXE}.partial"
        partial.write_bytes(archive.read(member))
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run sees the whole program or none
    return target


def fetch(dest: Path) -> Path:
    """Download the pinned uv wheel for this platform and extract ``uv`` into ``dest``."""
    index = os.environ.get("UV_BOOTSTRAP_INDEX", INDEX).rstrip("/")
    print(f"tools/uv.py: fetching uv {UV_VERSION} from {index} into {dest}", file=sys.stderr)
    # The project's page (not the per-release one, which some mirrors lack) lists the
    # files of every release; their URLs may be relative to it.
    url = f"{index}/uv/json"
    with urllib.request.urlopen(url, timeout=60) as resp:
        project = json.load(resp)
    files = project.get("releases", {}).get(UV_VERSION) or []
    prefix, suffix = platform_tags(platform.system(), platform.machine(), platform.libc_ver()[0])
    entry = pick_wheel(files, prefix, suffix)
    with urllib.request.urlopen(urllib.parse.urljoin(url, entry["url"]), timeout=300) as resp:
        wheel = resp.read()
    return extract_uv(wheel, entry["digests"]["sha256"], dest)


def works(program: str | Path) -> bool:
    """Whether ``program --version`` runs (a pyenv shim without uv behind it does not)."""
    try:
        done = subprocess.run([str(program), "--version"], capture_output=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0


def find_uv() -> Path:
    """The uv to run: on PATH, else cached, else fetched now."""
    on_path = shutil.which("uv")
    if on_path and works(on_path):
        return Path(on_path)
    dest = Path(os.environ.get("UV_BOOTSTRAP_DIR", ROOT / ".uv"))
    cached = dest / EXE
    if cached.is_file() and works(cached):
        return cached
    return fetch(dest)


def main() -> None:
    """Run uv with this script's arguments (replacing this process where the OS can)."""
    uv = str(find_uv())
    args = [uv, *sys.argv[1:]]
    if os.name == "nt":
        raise SystemExit(subprocess.call(args))
    os.execv(uv, args)


if __name__ == "__main__":
    main()
