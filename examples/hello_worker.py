"""A tiny zndraw-joblib worker.

Run it against a server (``zndraw-joblib-server serve``)::

    export ZNDRAW_JOBLIB_EMAIL=me@example.com ZNDRAW_JOBLIB_PASSWORD=secret
    zndraw-joblib worker examples/hello_worker.py:Greet --room demo

and submit a task from another shell::

    zndraw-joblib submit demo:modifiers:Greet --room demo --payload '{"name": "Ada"}' --wait
"""

from __future__ import annotations

from typing import Any

from zndraw_joblib_client import ClaimedTask, Extension


class Greet(Extension):
    """Say hello to someone."""

    category = "modifiers"

    name: str = "world"

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> dict[str, str]:
        if task is not None:
            task.progress(0.5, f"greeting {self.name}")
            task.check_cancelled()
        return {"greeting": f"Hello, {self.name}!"}


if __name__ == "__main__":
    import sys

    from zndraw_joblib_client.cli import main

    sys.exit(main(["worker", f"{__file__}:Greet", *sys.argv[1:]]))
