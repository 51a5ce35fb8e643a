"""The package facade: exports, docstrings, and no I/O stack pulled in at import."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import zndraw_joblib_core as core


def test_api_prefix() -> None:
    assert core.API_PREFIX == "/v1/joblib"


def test_all_is_sorted_unique_and_resolvable() -> None:
    assert len(core.__all__) == len(set(core.__all__))
    for name in core.__all__:
        assert hasattr(core, name), name


def _documentable() -> list[str]:
    return [
        name
        for name in core.__all__
        if inspect.isclass(getattr(core, name)) or inspect.isfunction(getattr(core, name))
    ]


@pytest.mark.parametrize("name", _documentable())
def test_public_classes_and_functions_have_docstrings(name: str) -> None:
    obj = getattr(core, name)
    doc = obj.__doc__  # own docstring, not inherited
    assert doc, f"{name} has no docstring"
    assert doc.strip().splitlines()[0].strip().endswith("."), name


def test_importing_core_pulls_in_no_server_or_http_stack() -> None:
    code = (
        "import sys, zndraw_joblib_core\n"
        "bad = sorted(m for m in ('fastapi', 'starlette', 'sqlalchemy', 'httpx', 'zndraw_auth',"
        " 'zndraw_joblib_server', 'zndraw_joblib_client') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
