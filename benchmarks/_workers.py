"""Load-generator bodies, each run in its own child process (see ``_procs.Group``).

Every function takes ``start`` first: it connects and warms up, calls ``start()`` (which
blocks until the parent releases all children together), does its bounded work and returns
a small dict. Every simulated worker or submitter has its own keep-alive connection
(``_http.Conn``, standard library: see there why not httpx; the idle scenario, which sends
almost nothing, uses httpx's asyncio client for its 100 parked claims).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from _api import PREFIX
from _http import Conn, Reply
from _stats import split

__all__ = ["claimer", "drainer", "hammer_live", "idler", "lean_worker", "parker", "submitter"]

Start = Callable[[], object]
MAX_ERRORS_KEPT = 5


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hammer_live(start: Start, base: str, duration: float) -> dict[str, Any]:
    """``GET /health/live`` in a loop for ``duration`` seconds on one keep-alive connection."""
    count = errors = 0
    with Conn(base) as conn:
        conn.get("/health/live")
        start()
        t0 = time.monotonic()
        end = t0 + duration
        while (now := time.monotonic()) < end:
            if conn.get("/health/live").status == 200:
                count += 1
            else:
                errors += 1
    return {"count": count, "errors": errors, "seconds": now - t0}


def submitter(
    start: Start,
    base: str,
    token: str,
    room: str,
    job_name: str,
    count: int,
    concurrency: int,
    deadline_s: float,
    batch: int = 1,
) -> dict[str, Any]:
    """Submit ``count`` tasks from ``concurrency`` threads (one connection each).

    ``batch > 1``: batch submits of up to ``batch`` tasks each.
    """
    ids: list[str] = []
    errors: list[str] = []
    url = f"{PREFIX}/rooms/{room}/tasks/{job_name}"
    batch_url = f"{PREFIX}/rooms/{room}/jobs/{job_name}/tasks"
    shares = split(count, concurrency)
    conns = [Conn(base, token) for _ in range(concurrency)]
    go = threading.Event()
    end = [0.0]

    def run(conn: Conn, share: int) -> None:
        go.wait()
        for first in range(0, share, batch):
            if time.monotonic() > end[0]:
                errors.append("deadline reached while submitting")
                return
            if batch == 1:
                resp = conn.post(url, {"payload": {"n": first}})
                if resp.status == 202:
                    ids.append(resp.json()["id"])
                    continue
            else:
                items = [{"payload": {"n": n}} for n in range(first, min(first + batch, share))]
                resp = conn.post(batch_url, {"items": items})
                if resp.status == 202:
                    ids.extend(t["id"] for t in resp.json()["items"])
                    continue
            if len(errors) < MAX_ERRORS_KEPT:
                errors.append(f"submit -> {resp.status}: {resp.text[:300]}")

    try:
        for conn in conns:
            conn.get("/health/live")
        threads = [
            threading.Thread(target=run, args=(c, n), daemon=True)
            for c, n in zip(conns, shares, strict=True)
        ]
        for thread in threads:
            thread.start()
        start()
        cpu = _cpu_s()
        end[0] = time.monotonic() + deadline_s
        go.set()
        for thread in threads:
            thread.join()
        t_end = time.monotonic()
        cpu = _cpu_s() - cpu
    finally:
        for conn in conns:
            conn.close()
    return {"ids": ids, "errors": errors, "t_end": t_end, "cpu_s": cpu}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def lean_worker(start: Start, base: str, token: str, worker_id: str, stop: Any) -> dict[str, Any]:
    """One worker slot at one request per task until ``stop`` is set.

    A claim that starts its task (``start``), then each completion carries the next claim
    (``claim_next``); both wait for work up to a second (``Prefer: wait=1``).
    """
    completed = requests = 0
    errors: list[str] = []
    wait = {"Prefer": "wait=1"}
    claim = {"worker_id": worker_id, "start": True}
    with Conn(base, token) as client:
        client.get("/health/live")
        start()
        tasks: list[dict[str, Any]] = []
        while not stop.is_set():
            if not tasks:
                resp = client.post(f"{PREFIX}/tasks/claim", claim, headers=wait)
                requests += 1
                if resp.status != 200:
                    errors.append(f"claim -> {resp.status}: {resp.text[:300]}")
                    break
                tasks = resp.json()["tasks"]
                continue
            body = {"status": "completed", "worker_id": worker_id, "claim_next": claim}
            resp = client.patch(f"{PREFIX}/tasks/{tasks[0]['id']}", body, headers=wait)
            requests += 1
            if resp.status != 200:
                errors.append(f"complete -> {resp.status}: {resp.text[:300]}")
                break
            completed += 1
            tasks = resp.json()["claimed"]["tasks"]
    return {"completed": completed, "requests": requests, "errors": errors[:MAX_ERRORS_KEPT]}


def drainer(
    start: Start,
    base: str,
    token: str,
    worker_id: str,
    batch: int,
    deadline_s: float,
    max_loops: int,
) -> dict[str, Any]:
    """Claim, start and complete tasks until a claim comes back empty.

    ``batch == 1``: one request per operation (claim, PATCH running, PATCH completed).
    ``batch > 1``: claim ``max_tasks=batch``, then one batch ``PATCH /tasks`` to start them
    all and one to complete them all (``Prefer: return=minimal``: only what applied).
    """
    claimed: list[str] = []
    completed: list[str] = []
    errors: list[str] = []
    requests = 0

    def bad(what: str, resp: Reply) -> None:
        if len(errors) < MAX_ERRORS_KEPT:
            errors.append(f"{what} -> {resp.status}: {resp.text[:300]}")

    with Conn(base, token) as client:
        client.get("/health/live")
        start()
        t0 = time.monotonic()
        end = t0 + deadline_s
        for _ in range(max_loops):
            if time.monotonic() > end:
                errors.append("deadline reached while draining")
                break
            body: dict[str, Any] = {"worker_id": worker_id}
            if batch > 1:
                body["max_tasks"] = batch
            resp = client.post(f"{PREFIX}/tasks/claim", body)
            requests += 1
            if resp.status != 200:
                bad("claim", resp)
                break
            ids = [t["id"] for t in resp.json()["tasks"]]
            if not ids:
                break
            claimed += ids
            if batch == 1:
                for status in ("running", "completed"):
                    resp = client.patch(
                        f"{PREFIX}/tasks/{ids[0]}", {"status": status, "worker_id": worker_id}
                    )
                    requests += 1
                    if resp.status != 200:
                        bad(f"patch {status}", resp)
                        break
                else:
                    completed.append(ids[0])
                continue
            ok = ids
            for status in ("running", "completed"):
                items = [{"task_id": i, "status": status, "worker_id": worker_id} for i in ok]
                resp = client.patch(f"{PREFIX}/tasks", items, headers={"Prefer": "return=minimal"})
                requests += 1
                if resp.status != 200:
                    bad(f"batch patch {status}", resp)
                    ok = []
                    break
                outcomes = resp.json()["items"]
                failed = [o for o in outcomes if not o["ok"]]
                if failed and len(errors) < MAX_ERRORS_KEPT:
                    errors.append(f"batch patch {status}: {len(failed)} failed: {failed[0]}")
                ok = [o["task_id"] for o in outcomes if o["ok"]]
            completed += ok
        t_end = time.monotonic()
    return {
        "claimed": claimed,
        "completed": completed,
        "errors": errors,
        "requests": requests,
        "t_end": t_end,
    }


def claimer(start: Start, base: str, token: str, worker_id: str, count: int) -> dict[str, Any]:
    """``count`` claims of one task each; client-side round trip of each, in ms."""
    latencies: list[float] = []
    errors: list[str] = []
    empty = 0
    with Conn(base, token) as client:
        client.get("/health/live")
        start()
        for _ in range(count):
            t = time.perf_counter()
            resp = client.post(f"{PREFIX}/tasks/claim", {"worker_id": worker_id})
            latencies.append((time.perf_counter() - t) * 1000)
            if resp.status != 200:
                errors.append(f"claim -> {resp.status}: {resp.text[:300]}")
                break
            if resp.json()["task"] is None:
                empty += 1
    return {"latencies_ms": latencies, "errors": errors, "empty": empty}


def parker(
    start: Start, base: str, token: str, worker_id: str, samples: int, conn: Any, wait: int
) -> dict[str, Any]:
    """Park in ``POST /tasks/claim`` with ``Prefer: wait``; report when each answer arrives.

    Protocol with the parent over ``conn``: send ``"parking"`` right before each claim, then
    ``(t_received, task_id_or_None)``; complete the task before parking again.
    """
    errors: list[str] = []
    with Conn(base, token, timeout=wait + 15) as client:
        client.get("/health/live")
        start()
        for _ in range(samples):
            conn.send("parking")
            body = {"worker_id": worker_id}
            resp = client.post(f"{PREFIX}/tasks/claim", body, headers={"Prefer": f"wait={wait}"})
            t_recv = time.monotonic()
            task = resp.json().get("task") if resp.status == 200 else None
            conn.send((t_recv, task["id"] if task else None))
            if resp.status != 200:
                errors.append(f"claim -> {resp.status}: {resp.text[:300]}")
                break
            if task is None:
                continue
            for status in ("running", "completed"):
                done = client.patch(
                    f"{PREFIX}/tasks/{task['id']}", {"status": status, "worker_id": worker_id}
                )
                if done.status != 200:
                    errors.append(f"patch {status} -> {done.status}: {done.text[:300]}")
    return {"errors": errors}


def idler(
    start: Start,
    base: str,
    token: str,
    worker_ids: list[str],
    duration: float,
    wait: int,
    stop: Any,
) -> dict[str, Any]:
    """One parked long-poll claim per worker, re-parked when answered.

    Ends after ``duration`` seconds or when the parent sets the ``stop`` event.
    """
    return asyncio.run(_idle_all(start, base, token, worker_ids, duration, wait, stop))


async def _idle_all(
    start: Start,
    base: str,
    token: str,
    worker_ids: list[str],
    duration: float,
    wait: int,
    stop: Any,
) -> dict[str, Any]:
    answers = tasks = 0
    errors: list[str] = []
    clients = [
        httpx.AsyncClient(base_url=base, timeout=wait + 15, headers=_headers(token))
        for _ in worker_ids
    ]
    try:
        await asyncio.gather(*(c.get("/health/live") for c in clients))
        await asyncio.to_thread(start)
        end = time.monotonic() + duration

        async def park(client: httpx.AsyncClient, worker_id: str) -> None:
            nonlocal answers, tasks
            while (remaining := end - time.monotonic()) > 0:
                try:
                    resp = await asyncio.wait_for(
                        client.post(
                            f"{PREFIX}/tasks/claim",
                            json={"worker_id": worker_id},
                            headers={"Prefer": f"wait={wait}"},
                        ),
                        remaining,
                    )
                except TimeoutError:
                    return
                answers += 1
                if resp.status_code != 200:
                    errors.append(f"claim -> {resp.status_code}: {resp.text[:300]}")
                    return
                tasks += len(resp.json()["tasks"])

        parks = asyncio.gather(*(park(c, w) for c, w in zip(clients, worker_ids, strict=True)))
        stopper = asyncio.ensure_future(asyncio.to_thread(stop.wait, duration))
        await asyncio.wait({parks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        parks.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await parks
        await stopper
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {"answers": answers, "tasks": tasks, "errors": errors[:MAX_ERRORS_KEPT]}
