"""Scenario ``hostile``: how long other requests wait while hostile ones are served.

Costly schemas and payloads (a backtracking ``pattern``, a recursive schema that takes
exponential time on a failing payload, a big ``uniqueItems`` array, a batch against a long
``enum``, a registration with thousands of patterns) are sent one after another from a
thread while the main thread probes ``GET /health/live`` back to back. The server validates
costly payloads in a separate process under a time budget, so the probes should stay near
their quiet latency; the contract test only checks they never wait out that budget.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from _api import PREFIX, BenchError
from _context import Context, Session
from _stats import latency_summary, median_of_runs

from zndraw_joblib_server.testing import hostile_jobs, many_patterns_schema

__all__ = ["hostile"]

LATENCY = ["p50_ms", "p99_ms", "max_ms"]


def _register(client: httpx.Client, room: str, name: str, schema: dict[str, Any]) -> str:
    body = {"category": "modifiers", "name": name, "schema": schema}
    resp = client.put(f"{PREFIX}/rooms/{room}/jobs", json=body)
    if resp.status_code not in (200, 201):
        raise BenchError(f"register {name} -> {resp.status_code}: {resp.text[:300]}")
    return str(resp.json()["full_name"])


def _requests(client: httpx.Client, room: str) -> list[tuple[str, str, bytes]]:
    """(method, path, body) of one round of hostile requests, serialised up front."""
    jobs = hostile_jobs()
    names = {key: _register(client, room, key, schema) for key, (schema, _) in jobs.items()}
    submit = f"{PREFIX}/rooms/{room}/tasks/"
    bodies: list[tuple[str, str, Any]] = [
        ("POST", submit + names[key], {"payload": jobs[key][1]})
        for key in ("redos", "recursive", "unique")
    ]
    bodies += [
        (
            "POST",
            f"{PREFIX}/rooms/{room}/jobs/{names['enum']}/tasks",
            {"items": [{"payload": jobs["enum"][1]}] * 1_000},
        ),
        (
            "PUT",
            f"{PREFIX}/rooms/{room}/jobs",
            {"category": "modifiers", "name": "big", "schema": many_patterns_schema()},
        ),
    ]
    return [(method, path, json.dumps(body).encode()) for method, path, body in bodies]


def _probe(base: str, stop: threading.Event) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as prober:
        prober.get("/health/live")
        while not stop.is_set():
            t0 = time.perf_counter()
            resp = prober.get("/health/live")
            latencies.append((time.perf_counter() - t0) * 1000)
            if resp.status_code != 200:
                raise BenchError(f"/health/live -> {resp.status_code}")
            time.sleep(0.002)
    return latencies


def _run(s: Session, room: str, rounds: int) -> dict[str, Any]:
    requests = _requests(s.api.client, room)
    quiet_stop = threading.Event()
    threading.Timer(1.0, quiet_stop.set).start()
    quiet = _probe(s.base, quiet_stop)
    stop = threading.Event()
    statuses: list[int] = []

    def attack() -> None:
        headers = {"Authorization": f"Bearer {s.token}", "Content-Type": "application/json"}
        try:
            with httpx.Client(base_url=s.base, timeout=60, headers=headers) as client:
                for _ in range(rounds):
                    for method, path, body in requests:
                        statuses.append(client.request(method, path, content=body).status_code)
        finally:
            stop.set()

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    loaded = _probe(s.base, stop)
    attacker.join(timeout=60)
    server_errors = [code for code in statuses if code >= 500]
    return {
        "ok": not server_errors and len(statuses) == rounds * len(requests),
        **latency_summary(loaded),
        **{f"quiet_{k}": v for k, v in latency_summary(quiet).items()},
        "hostile_requests": len(statuses),
        "statuses": sorted(set(statuses)),
    }


def hostile(ctx: Context) -> dict[str, Any]:
    """Scenario ``hostile``: ``/health/live`` latency while hostile requests are served."""
    rounds = 1 if ctx.quick else 3
    with ctx.session() as s:
        runs = [_run(s, f"hostile-{n}", rounds) for n in range(ctx.runs)]
    return {
        "ok": all(r["ok"] for r in runs),
        "rounds_per_run": rounds,
        **median_of_runs(runs, [*LATENCY, "quiet_p99_ms"]),
        "runs": runs,
    }
