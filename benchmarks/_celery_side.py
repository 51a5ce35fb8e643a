"""The Celery side of ``bench.py --compare celery``, run with the Celery environment's Python.

It is the Celery app (``celery -A _celery_side worker``: a no-op task, ``acks_late``, results
in Redis) and the producer: ``python _celery_side.py produce COUNT`` imports, prints
``ready``, waits for a line on stdin, sends ``COUNT`` tasks one message each and prints its
CPU seconds and end time as JSON. ``python _celery_side.py done`` prints the number of
stored results and when the first and last task finished.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

app = Celery("bench", broker=URL, backend=URL)
app.conf.update(
    task_acks_late=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop() -> None:
    """Do nothing."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def produce(count: int) -> None:
    """Send ``count`` tasks once released through stdin."""
    with app.connection_for_write() as conn:  # fail here, not while timed
        conn.ensure_connection(max_retries=3)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = _cpu()
    for _ in range(count):
        noop.delay()
    print(json.dumps({"cpu_s": _cpu() - cpu, "t_end": time.time()}), flush=True)


def done() -> None:
    """How many results are stored, and the first and last completion times."""
    client = app.backend.client
    keys = list(client.scan_iter(match="celery-task-meta-*", count=1000))
    stamps = []
    for start in range(0, len(keys), 1000):
        for raw in client.mget(keys[start : start + 1000]):
            if raw:
                stamps.append(json.loads(raw)["date_done"])
    first, last = min(stamps, default=None), max(stamps, default=None)
    print(json.dumps({"count": len(stamps), "first": first, "last": last}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(int(sys.argv[2]))
    else:
        done()
