"""A worker process built on ``JobManager.serve()`` for contract tests.

Usage: python sdk_worker.py URL ROOM EXT[,EXT...] [--ready FILE] [--heartbeat S]
       [--claim-wait S] [--concurrency N]

The bearer token comes from ``ZNDRAW_JOBLIB_TOKEN``. Registers the named classes of
``extensions.py`` in ROOM, writes the worker id to FILE (atomically) once registered, then
serves until SIGINT/SIGTERM. Exits 0 after a graceful stop.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import extensions

from zndraw_joblib_client import JobManager


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("room")
    parser.add_argument("extensions")
    parser.add_argument("--ready", default=None)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--claim-wait", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    manager = JobManager(args.url, token=os.environ["ZNDRAW_JOBLIB_TOKEN"])
    for name in args.extensions.split(","):
        manager.register(getattr(extensions, name), room=args.room)
    if args.ready:
        tmp = Path(f"{args.ready}.tmp")
        tmp.write_text(str(manager.worker_id))
        tmp.replace(args.ready)
    manager.serve(
        heartbeat_interval=args.heartbeat,
        claim_wait=args.claim_wait,
        concurrency=args.concurrency,
    )
    manager.close()
    logging.getLogger(__name__).info("worker exited cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
