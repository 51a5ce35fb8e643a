"""Client CPU per task of the ``zndraw-joblib worker`` command, per worker-loop transport.

A reference server on a fresh SQLite file; for each round and transport (``lean``: the
worker loop's ``http.client`` connections; ``httpx``: ``ZNDRAW_JOBLIB_TRANSPORT=httpx``),
alternating and rotating the order from round to round: ``--tasks`` no-op tasks are queued
in a fresh room, then one ``zndraw-joblib worker _noop:Noop`` process drains them. The
figure is the worker process's CPU (user + system, from ``/proc``) between its first
finished task and its last, divided by the tasks finished in between: start-up and
registration are left out. CPU figures survive a busy machine; wall-clock ones do not.

    python benchmarks/worker_cpu.py --rounds 3 --tasks 2000 --concurrency 1
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
from _api import PREFIX, login  # noqa: E402
from _cpu import pids_cpu, tree_pids  # noqa: E402
from _noop import Noop  # noqa: E402
from _server import Server  # noqa: E402

JOB = "@global:analysis:Noop"
POLL_S = 0.02
BATCH = 1000


def _completed(http: httpx.Client, room: str) -> int:
    resp = http.get(f"{PREFIX}/rooms/{room}/tasks", params={"status": "completed", "limit": 1})
    resp.raise_for_status()
    return int(resp.json()["total"])


def _queue(http: httpx.Client, room: str, n: int) -> None:
    for first in range(0, n, BATCH):
        items = [{"payload": {"n": k}} for k in range(first, min(first + BATCH, n))]
        resp = http.post(f"{PREFIX}/rooms/{room}/jobs/{JOB}/tasks", json={"items": items})
        resp.raise_for_status()


def _cpu(pid: int) -> float:
    return sum(pids_cpu(tree_pids(pid)).values())


def one_run(
    http: httpx.Client, base: str, token: str, transport: str, n: int, slots: int, tag: str
) -> float:
    """Drain ``n`` queued tasks with one worker process; its CPU ms per task."""
    room = f"cpu-{tag}-{time.monotonic_ns()}"
    _queue(http, room, n)
    command = [str(Path(sys.executable).parent / "zndraw-joblib"), "worker", "_noop:Noop"]
    command += ["--url", base, "--token", token, "--concurrency", str(slots)]
    env = {**os.environ, "PYTHONPATH": str(HERE), "ZNDRAW_JOBLIB_TRANSPORT": transport}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while (done0 := _completed(http, room)) == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker exited or stalled ({proc.returncode})")
            time.sleep(POLL_S)
        cpu0 = _cpu(proc.pid)
        while (done1 := _completed(http, room)) < n:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker exited or stalled ({proc.returncode})")
            time.sleep(POLL_S)
        cpu1 = _cpu(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return 1000.0 * (cpu1 - cpu0) / max(1, done1 - done0)


def main() -> None:
    """Run the rounds and print CPU ms per task for each transport."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    transports = ["lean", "httpx"]
    figures: dict[str, list[float]] = {t: [] for t in transports}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"ZNDRAW_JOBLIB_SQLITE_SYNCHRONOUS": "normal"}
        with Server(f"sqlite+aiosqlite:///{tmp}/bench.db", Path(tmp), env) as server:
            token = login(server.base_url)
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
                body = {"category": "analysis", "name": "Noop"}
                body["schema"] = Noop.model_json_schema()
                http.put(f"{PREFIX}/rooms/@global/jobs", json=body).raise_for_status()
                for round_ in range(args.rounds):
                    order = transports if round_ % 2 == 0 else transports[::-1]
                    for transport in order:
                        ms = one_run(
                            http,
                            server.base_url,
                            token,
                            transport,
                            args.tasks,
                            args.concurrency,
                            f"{transport}{round_}",
                        )
                        figures[transport].append(ms)
                        print(f"round {round_ + 1} {transport}: {ms:.3f} ms CPU/task", flush=True)
    for transport, values in figures.items():
        cells = " / ".join(f"{v:.3f}" for v in values)
        print(f"{transport}: median {statistics.median(values):.3f} ({cells}) ms CPU/task")


if __name__ == "__main__":
    main()
