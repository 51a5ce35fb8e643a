"""An extension for crash tests: returns its payload, after an optional pause."""

from __future__ import annotations

import time
from typing import Any

from zndraw_joblib_client import Extension


class Echo(Extension):
    """Echo ``i`` back as the result."""

    category = "modifiers"
    i: int = 0
    pause: float = 0.0

    def run(self, task: Any = None, **kwargs: Any) -> dict[str, int]:
        if self.pause:
            time.sleep(self.pause)
        return {"i": self.i}
