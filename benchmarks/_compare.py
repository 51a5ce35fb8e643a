"""``bench.py --compare celery``: the same no-op workload through this queue and Celery 5.

The workload: ``n`` no-op tasks (5,000; 200 with ``--quick``), one task per message, sent by 8
producer processes, run by 8 worker slots. Each system is measured two ways:

* drain: the tasks are queued first, then the workers start; from the first finished task
  to the last (tasks/s over that window);
* end to end: the workers are up and idle, the producers start; from the first send to the
  last finished task.

CPU per task sums every process involved over the window (read from ``/proc``): the server
(and PostgreSQL's processes) or Redis, the workers, and (end to end) the producers. On a
machine shared with other PostgreSQL users their load counts too: compare on SQLite.

The systems, alternated within each round (the order rotates from round to round):

* ``joblib_lean``: this queue with the benchmark's lean clients (``http.client``, one
  request per task: a claim that starts, completions that carry the next claim);
* ``joblib_worker_1x8`` / ``joblib_worker_8x1``: the ``zndraw-joblib worker`` command as
  users run it, one process with ``--concurrency 8`` / eight processes with one slot;
* ``celery``: ``celery worker -c 8`` (prefork) on the local Redis, ``acks_late``, results
  stored in Redis, producers calling ``.delay()``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
from _api import PREFIX
from _celery import CeleryLoad, celery_python, redis_pid_names, redis_up
from _context import Context, Session
from _cpu import named_pids, pids_cpu, tree_pids
from _e2e import measure_trivial
from _noop import Noop
from _procs import CTX, Group
from _workers import lean_worker, submitter

__all__ = ["compare_celery"]

PRODUCERS = 8
SLOTS = 8
POLL_S = 0.05
JOB = "@global:analysis:Noop"
HERE = Path(__file__).resolve().parent


class Load(Protocol):
    """A system under test: producers, workers, progress."""

    name: str

    def reset(self, n: int) -> None: ...
    def producers(self, n: int, count: int) -> Any: ...
    def release(self, procs: Any) -> None: ...
    def collect(self, procs: Any) -> float: ...
    def start_workers(self) -> list[int]: ...
    def wait_ready(self) -> None: ...
    def remaining(self) -> int: ...
    def stop_workers(self) -> None: ...
    def verify(self) -> dict[str, Any]: ...


class JoblibLoad:
    """This queue's side: producers over HTTP, and one of three kinds of workers.

    Args:
        s: The running server.
        kind: ``lean``, ``worker_1x8`` or ``worker_8x1``.
    """

    def __init__(self, s: Session, kind: str) -> None:
        self.s = s
        self.kind = kind
        self.name = f"joblib_{kind}"
        self.http = httpx.Client(
            base_url=s.base, headers={"Authorization": f"Bearer {s.token}"}, timeout=30
        )
        self.room = ""
        self.n = 0
        self.procs: list[subprocess.Popen[bytes]] = []
        self.group: Group | None = None
        self.stop = CTX.Event()
        self._rounds = 0
        self._before: set[str] = set()
        self.requests: int | None = None
        """HTTP requests the lean workers sent in the last round (None for the commands)."""

    def _put_job(self, worker_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "category": "analysis",
            "name": "Noop",
            "schema": Noop.model_json_schema(),
        }
        if worker_id is not None:
            body["worker_id"] = worker_id
        resp = self.http.put(f"{PREFIX}/rooms/@global/jobs", json=body)
        resp.raise_for_status()
        return dict(resp.json())

    def reset(self, n: int) -> None:
        """A fresh room to submit from (the counts are per room); the job registered."""
        self._rounds += 1
        self.n = n
        self.room = f"cmp-{self.kind}-{self._rounds}-{time.monotonic_ns()}"
        self._put_job()

    def producers(self, n: int, count: int) -> Group:
        """Producer processes (one connection each), ready and waiting."""
        shares = [n // count + (1 if i < n % count else 0) for i in range(count)]
        args = [(self.s.base, self.s.token, self.room, JOB, k, 1, 600.0) for k in shares]
        group = Group(submitter, args)
        group.wait_ready()
        return group

    @staticmethod
    def release(group: Group) -> None:
        """Let the producers send."""
        group.go()

    @staticmethod
    def collect(group: Group) -> float:
        """Wait for the producers; their CPU seconds while sending."""
        results = group.results(600)
        errors = [e for r in results for e in r["errors"]]
        if errors:
            raise RuntimeError(f"submit failed: {errors[0]}")
        return float(sum(r["cpu_s"] for r in results))

    def start_workers(self) -> list[int]:
        """Start the workers; their pids."""
        self.stop = CTX.Event()
        if self.kind == "lean":
            ids = [self._new_worker() for _ in range(SLOTS)]
            args = [(self.s.base, self.s.token, w, self.stop) for w in ids]
            self.group = Group(lean_worker, args)
            self.group.wait_ready()
            self.group.go()
            return self.group.pids
        self._before = self._serving()
        # BENCH_WORKER_COMMAND: another installation's command (e.g. an older release's)
        default = Path(sys.executable).parent / "zndraw-joblib"
        executable = os.environ.get("BENCH_WORKER_COMMAND", str(default))
        command = [executable, "worker", "_noop:Noop"]
        command += ["--url", self.s.base, "--token", self.s.token]
        slots, procs = (SLOTS, 1) if self.kind == "worker_1x8" else (1, SLOTS)
        env = {"PYTHONPATH": str(HERE), "PATH": str(Path(executable).parent)}
        self.procs = [
            subprocess.Popen(
                [*command, "--concurrency", str(slots)], env=env, stdout=subprocess.DEVNULL
            )
            for _ in range(procs)
        ]
        return [p.pid for p in self.procs]

    def _new_worker(self) -> str:
        resp = self.http.post(f"{PREFIX}/workers")
        resp.raise_for_status()
        worker_id = str(resp.json()["id"])
        self._put_job(worker_id)
        return worker_id

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the worker commands have registered (lean workers are ready at once)."""
        if self.kind == "lean":
            return
        deadline = time.monotonic() + timeout
        # new workers among the job's (the sweeper may drop the lean workers meanwhile)
        while len(self._serving() - self._before) < len(self.procs):
            if time.monotonic() > deadline:
                raise RuntimeError("zndraw-joblib worker did not register in time")
            time.sleep(0.05)

    def _serving(self) -> set[str]:
        resp = self.http.get(f"{PREFIX}/rooms/@global/jobs/{JOB}")
        resp.raise_for_status()
        return set(resp.json()["workers"])

    def remaining(self) -> int:
        """Tasks of this round not completed yet."""
        resp = self.http.get(
            f"{PREFIX}/rooms/{self.room}/tasks", params={"status": "completed", "limit": 0}
        )
        return self.n - int(resp.json()["total"])

    def stop_workers(self) -> None:
        """Stop the workers (gracefully: the commands delete their workers)."""
        self.stop.set()
        if self.group is not None:
            results = self.group.results(30)
            self.group = None
            errors = [e for r in results for e in r["errors"]]
            if errors:
                raise RuntimeError(f"lean worker failed: {errors[0]}")
            self.requests = sum(r["requests"] for r in results)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def verify(self) -> dict[str, Any]:
        """Every task of the round completed (the counts come from the server)."""
        resp = self.http.get(f"{PREFIX}/rooms/{self.room}/tasks", params={"limit": 0})
        total = int(resp.json()["total"])
        out = {"ok": total == self.n and self.remaining() == 0, "tasks": total}
        if self.requests is not None:  # the workers' requests per task (submits not included)
            out["worker_requests_per_task"] = round(self.requests / self.n, 3)
        return out

    def close(self) -> None:
        """Stop everything."""
        self.stop_workers()
        self.http.close()


def _cpu_of(pids: list[int]) -> dict[int, float]:
    everything: list[int] = []
    for pid in pids:
        everything += tree_pids(pid)
    return pids_cpu(everything)


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _wait_until(check: Callable[[], bool], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the tasks")
        time.sleep(POLL_S)
    return time.monotonic()


def drain(load: Load, n: int, base_pids: list[int], timeout: float) -> dict[str, Any]:
    """Queue ``n`` tasks, then start the workers: tasks/s and CPU from the first finished."""
    load.reset(n)
    load.collect(_released(load, load.producers(n, PRODUCERS)))
    workers = load.start_workers()
    try:
        left: list[int] = []
        t0 = _wait_until(lambda: left.append(load.remaining()) or left[-1] < n, timeout)
        before = _cpu_of(base_pids + workers)
        t1 = _wait_until(lambda: load.remaining() == 0, timeout)
        after = _cpu_of(base_pids + workers)
    finally:
        load.stop_workers()
    tasks = left[-1]
    cpu = _delta(before, after)
    return {
        "drain_tasks_per_s": round(tasks / (t1 - t0), 1),
        "drain_cpu_ms_per_task": round(cpu / tasks * 1000, 3),
        **_prefixed("drain_", load.verify()),
    }


def _prefixed(prefix: str, figures: dict[str, Any]) -> dict[str, Any]:
    """The figures' keys with ``prefix`` (drain and end to end report the same keys)."""
    return {prefix + k: v for k, v in figures.items()}


def _released(load: Load, procs: Any) -> Any:
    load.release(procs)
    return procs


def end_to_end(load: Load, n: int, base_pids: list[int], timeout: float) -> dict[str, Any]:
    """Workers up and idle, then the producers send: tasks/s and CPU from the first send."""
    load.reset(n)
    workers = load.start_workers()
    try:
        load.wait_ready()
        time.sleep(0.5)  # let the workers settle into their waiting claims
        procs = load.producers(n, PRODUCERS)
        before = _cpu_of(base_pids + workers)
        t0 = time.monotonic()
        load.release(procs)
        producer_cpu = load.collect(procs)  # (Celery counts only what was sent)
        t1 = _wait_until(lambda: load.remaining() == 0, timeout)
        after = _cpu_of(base_pids + workers)
    finally:
        load.stop_workers()
    cpu = _delta(before, after) + producer_cpu
    return {
        "e2e_tasks_per_s": round(n / (t1 - t0), 1),
        "e2e_cpu_ms_per_task": round(cpu / n * 1000, 3),
        **_prefixed("e2e_", load.verify()),
    }


METRICS = [
    "drain_tasks_per_s",
    "drain_cpu_ms_per_task",
    "e2e_tasks_per_s",
    "e2e_cpu_ms_per_task",
    "drain_worker_requests_per_task",
    "e2e_worker_requests_per_task",
]


def compare_celery(ctx: Context) -> dict[str, Any]:
    """Scenario ``compare_celery``: each system, alternating, ``ctx.runs`` rounds."""
    if not redis_up():
        return {"ok": True, "skipped": "no Redis on 127.0.0.1:6379"}
    n = ctx.tasks(200, 5000)
    python = celery_python()
    timeout = 60.0 if ctx.quick else 600.0
    with ctx.session() as s:
        db_pids = named_pids("postgres") if ctx.kind == "postgresql" else []
        joblib_pids = [s.server.pid, *db_pids]
        loads: list[tuple[Any, list[int]]] = [
            (JoblibLoad(s, "lean"), joblib_pids),
            (JoblibLoad(s, "worker_1x8"), joblib_pids),
            (JoblibLoad(s, "worker_8x1"), joblib_pids),
            (CeleryLoad(python, ctx.workdir, SLOTS), named_pids(*redis_pid_names)),
        ]
        runs: dict[str, list[dict[str, Any]]] = {load.name: [] for load, _ in loads}
        trivial_s = 1.0 if ctx.quick else 5.0
        trivial: list[float] = []  # the ceiling of the requests ratio, before and after
        try:
            trivial.append(measure_trivial(s, trivial_s))
            for round_ in range(ctx.runs):
                k = round_ % len(loads)
                for load, pids in loads[k:] + loads[:k]:
                    figures = {
                        **drain(load, n, pids, timeout),
                        **end_to_end(load, n, pids, timeout),
                    }
                    figures["ok"] = figures["drain_ok"] and figures["e2e_ok"]
                    runs[load.name].append(figures)
                    print(f"  {load.name} round {round_ + 1}: {figures}", file=sys.stderr)
            trivial.append(measure_trivial(s, trivial_s))
        finally:
            for load, _ in loads:
                load.close()
    return _report(n, runs, statistics.median(trivial))


def _requests_ratios(lean: dict[str, float], trivial: float) -> dict[str, float]:
    """(tasks/s x requests per task) / trivial requests/s of the lean workers.

    Drain counts the workers' requests; end to end also the one submit per task.
    """
    drain = lean["drain_tasks_per_s"] * lean["drain_worker_requests_per_task"]
    e2e = lean["e2e_tasks_per_s"] * (lean["e2e_worker_requests_per_task"] + 1)
    return {
        "trivial_requests_per_s": round(trivial, 1),
        "drain_requests_ratio": round(drain / trivial, 3),
        "e2e_requests_ratio": round(e2e / trivial, 3),
    }


def _report(n: int, runs: dict[str, list[dict[str, Any]]], trivial: float) -> dict[str, Any]:
    medians = {
        name: {m: statistics.median(r[m] for r in rs) for m in METRICS if m in rs[0]}
        for name, rs in runs.items()
    }
    requests = _requests_ratios(medians["joblib_lean"], trivial)
    celery = medians["celery"]
    ratios = {
        name: {
            "drain_ratio": round(m["drain_tasks_per_s"] / celery["drain_tasks_per_s"], 2),
            "e2e_ratio": round(m["e2e_tasks_per_s"] / celery["e2e_tasks_per_s"], 2),
            "drain_cpu_ratio": round(
                m["drain_cpu_ms_per_task"] / celery["drain_cpu_ms_per_task"], 2
            ),
            "e2e_cpu_ratio": round(m["e2e_cpu_ms_per_task"] / celery["e2e_cpu_ms_per_task"], 2),
        }
        for name, m in medians.items()
        if name != "celery"
    }
    lines = [f"compare_celery: {n} no-op tasks, {PRODUCERS} producers, {SLOTS} slots (medians)"]
    lines.append(
        f"  {'system':<20} {'drain/s':>9} {'cpu ms':>7} {'e2e/s':>9} {'cpu ms':>7}"
        f" {'drain x':>8} {'e2e x':>6}"
    )
    for name, m in medians.items():
        r = ratios.get(name, {"drain_ratio": 1.0, "e2e_ratio": 1.0})
        lines.append(
            f"  {name:<20} {m['drain_tasks_per_s']:>9.1f} {m['drain_cpu_ms_per_task']:>7.2f}"
            f" {m['e2e_tasks_per_s']:>9.1f} {m['e2e_cpu_ms_per_task']:>7.2f}"
            f" {r['drain_ratio']:>8.2f} {r['e2e_ratio']:>6.2f}"
        )
    lines.append(
        f"  joblib_lean (tasks/s x requests per task) / trivial {trivial:.0f} req/s:"
        f" drain {requests['drain_requests_ratio']:.2f}, e2e {requests['e2e_requests_ratio']:.2f}"
    )
    print("\n".join(lines), file=sys.stderr)
    ok = all(r.get("ok", False) for rs in runs.values() for r in rs)
    return {
        "ok": ok,
        "tasks": n,
        "medians": medians,
        "ratios_to_celery": ratios,
        **requests,
        "runs": runs,
    }
