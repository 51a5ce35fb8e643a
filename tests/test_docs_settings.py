"""docs/settings.md lists every field of JobLibSettings, and nothing else, with its default."""

from __future__ import annotations

import re
from pathlib import Path

from zndraw_joblib_server import JobLibSettings

SETTINGS_DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
ROW = re.compile(r"^\| `ZNDRAW_JOBLIB_([A-Z0-9_]+)` \| ([^|]*) \|")


def _documented() -> dict[str, str]:
    rows = (ROW.match(line) for line in SETTINGS_DOC.read_text().splitlines())
    return {m.group(1).lower(): m.group(2).strip() for m in rows if m}


def test_every_setting_is_documented() -> None:
    missing = sorted(set(JobLibSettings.model_fields) - set(_documented()))
    assert missing == [], f"add rows for these settings to docs/settings.md: {missing}"


def test_no_documented_setting_is_unknown() -> None:
    unknown = sorted(set(_documented()) - set(JobLibSettings.model_fields))
    assert unknown == [], f"docs/settings.md lists settings that do not exist: {unknown}"


def test_every_documented_setting_has_a_default() -> None:
    assert all(default for default in _documented().values())
