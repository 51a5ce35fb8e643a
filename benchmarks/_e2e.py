"""Throughput scenarios: trivial ceiling, end to end (unbatched, batched), memory growth."""

from __future__ import annotations

import collections
import itertools
from typing import Any

from _api import Heartbeat, Job
from _context import Context, Session
from _procs import Group, run_group
from _stats import median_of_runs, split
from _workers import drainer, hammer_live, submitter

__all__ = ["e2e_batched", "e2e_unbatched", "memory", "trivial"]

WORKERS = 8
REQUESTS_PER_TASK = 4  # submit, claim, start, complete
CLAIM_BATCH = 100  # the most one claim may take (MAX_CLAIM_BATCH)
SUBMIT_BATCH = 500
SUBMIT_CONCURRENCY = 3
"""Concurrent submitters per producer process (4 processes): 12 in all. With 16 or more
concurrent submits the SQLite server sometimes stalled for many seconds."""
_rooms = itertools.count(1)


def measure_trivial(s: Session, seconds: float) -> float:
    """Requests/s of ``GET /health/live`` from 8 client processes (one client each)."""
    _, results = run_group(hammer_live, [(s.base, seconds)] * WORKERS, timeout=seconds + 60)
    errors = sum(r["errors"] for r in results)
    if errors:
        raise RuntimeError(f"{errors} failed /health/live requests")
    return sum(r["count"] for r in results) / max(r["seconds"] for r in results)


def trivial(ctx: Context) -> dict[str, Any]:
    """Scenario ``trivial``: the HTTP ceiling of this app on this machine."""
    seconds = 1.0 if ctx.quick else 5.0
    with ctx.session() as s:
        runs = [{"requests_per_s": round(measure_trivial(s, seconds), 1)} for _ in range(ctx.runs)]
    med = median_of_runs(runs, ["requests_per_s"])
    return {"ok": True, "clients": WORKERS, "duration_s": seconds, **med, "runs": runs}


def drive(
    s: Session,
    job: Job,
    n: int,
    *,
    batch: int,
    producers: int,
    concurrency: int,
    deadline_s: float,
    submit_batch: int = 1,
) -> dict[str, Any]:
    """Submit ``n`` tasks (backlog), drain them with 8 workers, verify each completed once."""
    shares = split(n, producers)
    args = [
        (s.base, s.token, job.room, job.full_name, share, concurrency, deadline_s, submit_batch)
        for share in shares
    ]
    group = Group(submitter, args)
    try:
        with Heartbeat(s.base, s.token, job.worker_ids) as beat:
            group.wait_ready()
            t0 = group.go()
            subs = group.results(deadline_s + 60)
    finally:
        group.kill()
    submit_s = max(r["t_end"] for r in subs) - t0
    ids = [i for r in subs for i in r["ids"]]
    errors = [e for r in subs for e in r["errors"]] + beat.errors

    max_loops = n + 10
    args = [(s.base, s.token, w, batch, deadline_s, max_loops) for w in job.worker_ids]
    t0, drains = run_group(drainer, args, timeout=deadline_s + 60)
    drain_s = max(r["t_end"] for r in drains) - t0
    errors += [e for r in drains for e in r["errors"]]
    completed = [i for r in drains for i in r["completed"]]
    claimed = [i for r in drains for i in r["claimed"]]

    api_completed = s.api.count(job, "completed")
    api_total = s.api.count(job)
    lost = len(set(ids) - set(completed))
    duplicates = _dups(completed) + max(api_completed - len(ids), 0)
    double_claims = _dups(claimed)
    ok = (
        not errors
        and len(ids) == n
        and lost == 0
        and duplicates == 0
        and double_claims == 0
        and api_completed == api_total == n
    )
    return {
        "ok": ok,
        "tasks": n,
        "submitted": len(ids),
        "submit_s": round(submit_s, 3),
        "submits_per_s": round(len(ids) / submit_s, 1),
        "drain_s": round(drain_s, 3),
        "drain_tasks_per_s": round(len(completed) / drain_s, 1),
        "pipeline_tasks_per_s": round(len(set(completed)) / (submit_s + drain_s), 1),
        "requests": sum(r["requests"] for r in drains) + len(ids),
        "api_completed": api_completed,
        "lost": lost,
        "duplicates": duplicates,
        "double_claims": double_claims,
        "errors": errors[:5],
    }


def _dups(ids: list[str]) -> int:
    return sum(c - 1 for c in collections.Counter(ids).values() if c > 1)


E2E_METRICS = [
    "pipeline_tasks_per_s",
    "drain_tasks_per_s",
    "submits_per_s",
    "submit_s",
    "drain_s",
    "trivial_requests_per_s",
    "ratio_to_trivial",
    "drain_ratio_to_trivial",
]
MEMORY_METRICS = [
    "growth_pct",
    "growth_from_start_pct",
    "rss_start_kib",
    "rss_warm_kib",
    "rss_end_kib",
]


def _summarise(runs: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    out = median_of_runs(runs, metrics)
    out["lost"] = sum(r["lost"] for r in runs)
    out["duplicates"] = sum(r["duplicates"] for r in runs)
    out["double_claims"] = sum(r["double_claims"] for r in runs)
    out["errors"] = [e for r in runs for e in r["errors"]][:5]
    return {"ok": all(r["ok"] for r in runs), **out, "runs": runs}


def new_job(s: Session, workers: int = WORKERS) -> Job:
    """A job in a room of its own, with ``workers`` workers serving it."""
    n = next(_rooms)
    return s.api.job_with_workers(f"bench{n}", f"Job{n}", workers)


def e2e_unbatched(ctx: Context) -> dict[str, Any]:
    """Scenario ``e2e_unbatched``: one request per submit, claim, start and complete."""
    n = ctx.tasks(100, 10_000)
    seconds = 1.0 if ctx.quick else 3.0
    runs = []
    with ctx.session() as s:
        for _ in range(ctx.runs):
            trivial_rps = measure_trivial(s, seconds)
            run = drive(
                s, new_job(s), n, batch=1, producers=WORKERS, concurrency=1, deadline_s=600
            )
            run["trivial_requests_per_s"] = round(trivial_rps, 1)
            run["ratio_to_trivial"] = round(
                run["pipeline_tasks_per_s"] * REQUESTS_PER_TASK / trivial_rps, 3
            )
            run["drain_ratio_to_trivial"] = round(run["drain_tasks_per_s"] * 3 / trivial_rps, 3)
            runs.append(run)
    return {"workers": WORKERS, "producers": WORKERS, **_summarise(runs, E2E_METRICS)}


def e2e_batched(ctx: Context) -> dict[str, Any]:
    """Scenario ``e2e_batched``: 12 concurrent batch submitters (500 tasks per request), claims
    of 100, one batch update to start and one to complete them."""
    n = ctx.tasks(300, 20_000)
    runs = []
    with ctx.session() as s:
        for _ in range(ctx.runs):
            runs.append(
                drive(
                    s,
                    new_job(s),
                    n,
                    batch=CLAIM_BATCH,
                    producers=4,
                    concurrency=SUBMIT_CONCURRENCY,
                    deadline_s=600,
                    submit_batch=SUBMIT_BATCH,
                )
            )
    return {
        "workers": WORKERS,
        "submitters": 4 * SUBMIT_CONCURRENCY,
        "claim_batch": CLAIM_BATCH,
        "submit_batch": SUBMIT_BATCH,
        **_summarise(runs, E2E_METRICS),
    }


def memory(ctx: Context) -> dict[str, Any]:
    """Scenario ``memory``: server RSS after a warm-up chunk and after ``total`` more tasks.

    ``growth_pct`` compares the end with the warmed-up server; ``growth_from_start_pct``
    with the server right after start.
    """
    total = ctx.tasks(500, 100_000)
    chunk = min(total, 500 if ctx.quick else 10_000)
    runs = []
    for _ in range(ctx.runs):
        with ctx.session() as s:
            rss_start = s.server.rss_kib()
            # Warm up with one chunk: caches (SQLite pages per pooled connection, compiled
            # statements, allocator arenas) fill under the real load before the baseline.
            warm = drive(
                s,
                new_job(s),
                chunk,
                batch=CLAIM_BATCH,
                producers=4,
                concurrency=SUBMIT_CONCURRENCY,
                deadline_s=120,
                submit_batch=SUBMIT_BATCH,
            )
            rss_warm = s.server.rss_kib()
            job = new_job(s)
            samples, checks = [], [warm]
            for _ in range(max(total // chunk, 1)):
                checks.append(
                    drive(
                        s,
                        job,
                        chunk,
                        batch=CLAIM_BATCH,
                        producers=4,
                        concurrency=SUBMIT_CONCURRENCY,
                        deadline_s=900,
                        submit_batch=SUBMIT_BATCH,
                    )
                )
                job = new_job(s)
                samples.append(s.server.rss_kib())
            rss_end = samples[-1]
        runs.append(
            {
                "ok": all(c["ok"] for c in checks),
                "tasks": total,
                "rss_start_kib": rss_start,
                "rss_warm_kib": rss_warm,
                "rss_end_kib": rss_end,
                "growth_pct": round((rss_end - rss_warm) / rss_warm * 100, 2),
                "growth_from_start_pct": round((rss_end - rss_start) / rss_start * 100, 2),
                "rss_per_chunk_kib": samples,
                "lost": sum(c["lost"] for c in checks),
                "duplicates": sum(c["duplicates"] for c in checks),
                "double_claims": sum(c["double_claims"] for c in checks),
                "errors": [e for c in checks for e in c["errors"]][:5],
            }
        )
    return {"pipeline": "batched", "chunk": chunk, **_summarise(runs, MEMORY_METRICS)}
