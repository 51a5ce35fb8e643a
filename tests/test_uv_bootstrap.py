"""tools/uv.py, the README's set-up entry point, on a machine without uv.

A fake PyPI index (``file://`` URLs, laid out like PyPI's JSON API with relative file URLs
as some mirrors serve them) holds a fake uv wheel whose ``uv`` is a shell script; the real
download is the same code with another base URL.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "uv.py"

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the fake uv is a shell script")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("uv_bootstrap", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bootstrap = _load()


def _fake_index(tmp_path: Path, *, digest: str | None = None) -> Path:
    """Write a fake index whose uv wheel for this platform holds an echoing ``uv``."""
    version = bootstrap.UV_VERSION
    prefix, suffix = bootstrap.platform_tags(
        platform.system(), platform.machine(), platform.libc_ver()[0]
    )
    files = tmp_path / "index" / "files"
    files.mkdir(parents=True)
    name = f"uv-{version}-py3-none-{prefix}_2_17{suffix}.whl"
    with zipfile.ZipFile(files / name, "w") as wheel:
        wheel.writestr(f"uv-{version}.dist-info/METADATA", "Name: uv\n")
        wheel.writestr(f"uv-{version}.data/scripts/uv", '#!/bin/sh\necho "fake uv: $*"\n')
    data = (files / name).read_bytes()
    entries = [
        {"filename": f"uv-{version}.tar.gz", "url": "../../files/x.tar.gz", "digests": {}},
        {
            "filename": name,
            "url": f"../../files/{name}",
            "digests": {"sha256": digest or hashlib.sha256(data).hexdigest()},
        },
    ]
    api = tmp_path / "index" / "api" / "uv"
    api.mkdir(parents=True)
    (api / "json").write_text(json.dumps({"releases": {version: entries}}))
    return tmp_path / "index" / "api"


def _run(tmp_path: Path, index: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "uv").exists()]
    env = {
        **os.environ,
        "PATH": os.pathsep.join(path),
        "UV_BOOTSTRAP_DIR": str(tmp_path / "cache"),
        "UV_BOOTSTRAP_INDEX": index.as_uri(),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_without_uv_on_path_it_fetches_checks_and_runs_uv(tmp_path: Path) -> None:
    index = _fake_index(tmp_path)
    done = _run(tmp_path, index, "run", "nox", "-l")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fake uv: run nox -l"
    assert (tmp_path / "cache" / "uv").is_file()


def test_a_fetched_uv_is_reused_without_the_index(tmp_path: Path) -> None:
    index = _fake_index(tmp_path)
    assert _run(tmp_path, index, "--version").returncode == 0
    done = _run(tmp_path, tmp_path / "gone", "sync")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fake uv: sync"


def test_a_wheel_whose_digest_differs_is_refused(tmp_path: Path) -> None:
    index = _fake_index(tmp_path, digest="0" * 64)
    done = _run(tmp_path, index, "--version")
    assert done.returncode != 0
    assert "sha256" in done.stderr
    assert not (tmp_path / "cache" / "uv").exists()


@pytest.mark.parametrize(
    ("system", "machine", "libc", "expected"),
    [
        ("Linux", "x86_64", "glibc", "manylinux_2_17_x86_64.manylinux2014_x86_64"),
        ("Linux", "x86_64", "", "musllinux_1_1_x86_64"),
        ("Linux", "aarch64", "glibc", "manylinux_2_17_aarch64.manylinux2014_aarch64"),
        ("Darwin", "arm64", "", "macosx_11_0_arm64"),
        ("Darwin", "x86_64", "", "macosx_10_12_x86_64"),
        ("Windows", "AMD64", "", "win_amd64"),
    ],
)
def test_the_wheel_for_each_platform_is_picked(
    system: str, machine: str, libc: str, expected: str
) -> None:
    tags = [
        "linux_armv6l",
        "macosx_10_12_x86_64",
        "macosx_11_0_arm64",
        "manylinux_2_17_aarch64.manylinux2014_aarch64",
        "manylinux_2_17_i686.manylinux2014_i686",
        "manylinux_2_17_x86_64.manylinux2014_x86_64",
        "musllinux_1_1_x86_64",
        "win32",
        "win_amd64",
        "win_arm64",
    ]
    files = [{"filename": f"uv-1.0.0-py3-none-{t}.whl"} for t in tags]
    files.insert(0, {"filename": "uv-1.0.0.tar.gz"})
    prefix, suffix = bootstrap.platform_tags(system, machine, libc)
    assert bootstrap.pick_wheel(files, prefix, suffix)["filename"].endswith(f"-{expected}.whl")
