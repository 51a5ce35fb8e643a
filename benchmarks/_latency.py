"""Latency and idle-cost scenarios: claim latency, wake-up latency, idle database queries."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _api import PREFIX, BenchError, Job
from _context import Context, Session
from _e2e import WORKERS, new_job
from _http import Conn
from _preload import preload_tasks
from _procs import CTX, Group, run_group
from _stats import latency_summary, median_of_runs
from _workers import claimer, idler, parker

__all__ = ["claim_latency", "idle_queries", "wakeup_latency"]

LATENCY = ["p50_ms", "p99_ms", "max_ms"]
IDLE = [
    "queries_per_s",
    "statements",
    "transactions",
    "transactions_per_s",
    "server_cpu_pct",
    "claim_answers",
]

PARK_DELAY_S = 0.03
"""Pause between the worker announcing its claim and the submit (lets the claim park)."""
WAKEUP_WARMUP = 5
"""Wake-up rounds run before the measured ones."""


# ------------------------------------------------------------------------- claim latency


def _claims(s: Session, job: Job, count: int, claimers: int = 1) -> dict[str, Any]:
    args = [(s.base, s.token, w, count) for w in job.worker_ids[:claimers]]
    _, results = run_group(claimer, args, timeout=300)
    latencies = [x for r in results for x in r["latencies_ms"]]
    errors = [e for r in results for e in r["errors"]]
    empty = sum(r["empty"] for r in results)
    return {
        "ok": not errors and empty == 0,
        **latency_summary(latencies),
        "empty": empty,
        "errors": errors[:5],
    }


def claim_latency(ctx: Context) -> dict[str, Any]:
    """Scenario ``claim_latency``: claims at a small and at a big table.

    The headline figures are one claimer's back-to-back claims (the latency of a claim);
    ``loaded_*`` are 8 claimers at once, which also measures queueing behind each other on
    a saturated server.
    """
    claims = 50 if ctx.quick else 300
    loaded_claims = 20 if ctx.quick else 100
    pending, finished = (10_000, 100_000) if ctx.quick else (100_000, 1_000_000)
    small_rows = 1_000
    with ctx.session() as s:
        url = s.server.database_url
        user_id = s.api.user_id()

        def load(job: Job, pending: int, completed: int) -> None:
            preload_tasks(
                url,
                job_id=job.id,
                room_id=job.room,
                user_id=user_id,
                worker_id=job.worker_ids[0],
                pending=pending,
                completed=completed,
            )

        small = []
        for _ in range(ctx.runs):
            job = new_job(s)
            load(job, small_rows, 0)
            small.append(_claims(s, job, claims))
        big_job = new_job(s)
        t0 = time.monotonic()
        load(big_job, pending, finished)
        preload_s = time.monotonic() - t0
        big = [_claims(s, big_job, claims) for _ in range(ctx.runs)]
        loaded = [_claims(s, big_job, loaded_claims, claimers=WORKERS) for _ in range(ctx.runs)]
    small_med, big_med = median_of_runs(small, LATENCY), median_of_runs(big, LATENCY)
    loaded_med = median_of_runs(loaded, LATENCY)
    return {
        "ok": all(r["ok"] for r in small + big + loaded),
        "claimers": 1,
        "claims": claims,
        **{f"loaded_{k}": v for k, v in loaded_med.items()},
        "loaded_claimers": WORKERS,
        "loaded_claims_per_claimer": loaded_claims,
        "pending_rows": pending,
        "finished_rows": finished,
        "preload_s": round(preload_s, 1),
        **big_med,
        "small_table_rows": small_rows,
        **{f"small_{k}": v for k, v in small_med.items()},
        "p99_ratio_big_to_small": round(big_med["p99_ms"] / small_med["p99_ms"], 2),
        "runs": big,
        "small_runs": small,
        "loaded_runs": loaded,
    }


# ------------------------------------------------------------------------ wake-up latency


def _wakeups(s: Session, submit_base: str, samples: int) -> dict[str, Any]:
    """Park a claim, submit a task through ``submit_base``, time the claim's answer.

    The first :data:`WAKEUP_WARMUP` rounds are not measured: they run the path's code and
    statements for the first time (the first answer takes about four times as long).
    """
    job = new_job(s, workers=1)
    ours, theirs = CTX.Pipe()
    rounds = WAKEUP_WARMUP + samples
    group = Group(parker, [(s.base, s.token, job.worker_ids[0], rounds, theirs, 10)])
    latencies: list[float] = []
    missed = 0
    url = f"{PREFIX}/rooms/{job.room}/tasks/{job.full_name}"
    try:
        with Conn(submit_base, s.token) as submitter:
            group.wait_ready()
            group.go()
            for n in range(rounds):
                if not ours.poll(30):
                    raise BenchError("the parked worker stopped answering")
                ours.recv()  # "parking"
                time.sleep(PARK_DELAY_S)
                t_send = time.monotonic()
                sent = submitter.post(url, {"payload": {}})
                if sent.status != 202:
                    raise BenchError(f"submit -> {sent.status}: {sent.text[:300]}")
                if not ours.poll(30):
                    raise BenchError("no claim answer within 30 s")
                t_recv, got = ours.recv()
                if n < WAKEUP_WARMUP:
                    continue
                if got == sent.json()["id"]:
                    latencies.append((t_recv - t_send) * 1000)
                else:
                    missed += 1
        errors = group.results(60)[0]["errors"]
    finally:
        group.kill()
    return {"ok": not errors, **latency_summary(latencies), "missed": missed, "errors": errors[:5]}


def wakeup_latency(ctx: Context) -> dict[str, Any]:
    """Scenario ``wakeup_latency``: submit to the answer of a parked ``Prefer: wait`` claim."""
    samples = 50 if ctx.quick else 300
    out: dict[str, Any] = {"samples_per_run": samples, "park_delay_s": PARK_DELAY_S}
    with ctx.session() as s:
        runs = [_wakeups(s, s.base, samples) for _ in range(ctx.runs)]
        out |= {"ok": all(r["ok"] for r in runs), **median_of_runs(runs, LATENCY), "runs": runs}
        if ctx.kind == "postgresql":
            other = ctx.start_server(s.server.database_url)
            two = [_wakeups(s, other.base_url, samples) for _ in range(ctx.runs)]
            out["ok"] = out["ok"] and all(r["ok"] for r in two)
            out |= {f"two_servers_{k}": v for k, v in median_of_runs(two, LATENCY).items()}
            out["two_servers_runs"] = two
        else:
            out["two_servers"] = "not measured: needs PostgreSQL (SQLite is one process)"
    return out


# --------------------------------------------------------------------------- idle queries

STATS_FLUSH_S = 2.0
"""PostgreSQL backends publish their counters up to about a second after going idle."""

_XACTS = (
    "SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database "
    "WHERE datname = current_database()"
)


async def _pg_transactions(url: str, seconds: float) -> int:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        before = await conn.fetchval(_XACTS)
        await asyncio.sleep(seconds)
        after = await conn.fetchval(_XACTS)
    finally:
        await conn.close()
    return int(after - before)  # may include our own first SELECT (stats flush lag)


def _wait_quiet(s: Session, max_s: float, window: float = 0.5, cpu_pct: float = 10.0) -> float:
    """Wait until the server's CPU stays under ``cpu_pct`` for ``window`` s (all parked)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        cpu0 = s.server.cpu_seconds()
        time.sleep(window)
        if (s.server.cpu_seconds() - cpu0) / window * 100 < cpu_pct:
            break
    return time.monotonic() - t0


def _idle_run(ctx: Context, s: Session, workers: int, seconds: float) -> dict[str, Any]:
    settle = 15.0  # at most: until the first claims are parked and the server is quiet
    job = new_job(s, workers=workers)
    half = workers // 2
    life = settle + seconds + 5.0
    groups = [job.worker_ids[:half], job.worker_ids[half:]]
    stop = CTX.Event()
    group = Group(idler, [(s.base, s.token, ids, life, 60, stop) for ids in groups])
    try:
        group.wait_ready()
        group.go()
        settled = _wait_quiet(s, settle)
        if ctx.kind == "postgresql":
            time.sleep(STATS_FLUSH_S)
        cpu0 = s.server.cpu_seconds()
        t0 = time.monotonic()
        # The probe's own share: the least of three back-to-back pairs (a statement of the
        # server's own between the two reads of one pair would inflate it).
        per_probe = min(-_server_statements(s) + _server_statements(s) for _ in range(3))
        statements0 = _server_statements(s)
        if ctx.kind == "postgresql":
            xacts: int | None = asyncio.run(_pg_transactions(s.server.database_url, seconds))
        else:
            time.sleep(seconds)
            xacts = None
        # Never below 0: the probe's share may be cached (its user) during the window.
        statements = max(0, _server_statements(s) - statements0 - per_probe)
        elapsed = time.monotonic() - t0
        cpu = s.server.cpu_seconds() - cpu0
        stop.set()
        results = group.results(life + 30)
    finally:
        group.kill()
    errors = [e for r in results for e in r["errors"]]
    run: dict[str, Any] = {
        "ok": not errors,
        "seconds": round(elapsed, 2),
        "settle_s": round(settled, 2),
        "server_cpu_pct": round(cpu / elapsed * 100, 2),
        "claim_answers": sum(r["answers"] for r in results),
        "errors": errors[:5],
    }
    run["statements"] = statements
    run["statements_per_s"] = round(statements / elapsed, 2)
    if xacts is not None:
        run["transactions"] = xacts
        run["transactions_per_s"] = round(xacts / elapsed, 2)
    run["queries_per_s"] = run["statements_per_s"]
    return run


def _server_statements(s: Session) -> int:
    """Statements the server has sent to its database (its ``/health`` counter)."""
    import httpx

    return int(httpx.get(f"{s.base}/health", timeout=10).json()["statements"])


def idle_queries(ctx: Context) -> dict[str, Any]:
    """Scenario ``idle_queries``: database load caused by 100 parked long-poll claims."""
    seconds = 3.0 if ctx.quick else 20.0
    workers = 100
    # A fresh server per run: parked claims cut off by the client stay parked in the server
    # until their wait ends, and would be counted in the next run's window.
    runs = []
    for _ in range(ctx.runs):
        with ctx.session() as s:
            runs.append(_idle_run(ctx, s, workers, seconds))
    out: dict[str, Any] = {
        "ok": all(r["ok"] for r in runs),
        "idle_workers": workers,
        "wait": 60,
        **median_of_runs(runs, IDLE),
        "runs": runs,
    }
    out["measured_as"] = (
        "statements the server sent (its /health counter); on PostgreSQL also "
        "pg_stat_database transactions"
    )
    return out
