"""A worker process serving one provider with the SDK (for the provider contract tests).

Usage: ``provider_worker.py URL ROOM NAME READY_FILE`` with ``ZNDRAW_JOBLIB_TOKEN`` set.
It registers ``Echo`` as ``{ROOM}:demo:{NAME}``, writes READY_FILE, and serves until killed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from zndraw_joblib_client import JobManager, Provider


class Echo(Provider):
    """Answers its parameter and the process id; ``fail=true`` raises."""

    category: ClassVar[str] = "demo"
    text: str
    fail: bool = False

    def read(self, handler: Any) -> Any:
        """The echo."""
        if self.fail:
            raise ValueError(f"asked to fail on {self.text!r}")
        return {"echo": self.text, "pid": os.getpid(), "handler": handler}


def main() -> None:
    """Register and serve."""
    url, room, name, ready = sys.argv[1:5]
    manager = JobManager(url, token=os.environ["ZNDRAW_JOBLIB_TOKEN"])
    manager.register_provider(Echo, name=name, handler="h", room=room)
    Path(ready).write_text(str(manager.worker_id))
    manager.serve(claim_wait=5, heartbeat_interval=0.5, install_signal_handlers=True)


if __name__ == "__main__":
    main()
