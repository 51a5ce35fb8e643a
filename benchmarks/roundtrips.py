"""CPU per task of the server's hot paths, in-process: submit, claim, start, complete.

Runs the reference app in this process (httpx's ASGI transport, no network) and measures
the process's CPU time (``time.process_time``) over ``--tasks`` tasks, each submitted,
claimed, started and completed one request at a time. CPU time, unlike wall time, holds up
on a machine shared with other work; the client's share is in it too, equally before and
after a change. One JSON line on stdout.

    uv run python benchmarks/roundtrips.py                      # SQLite file
    uv run python benchmarks/roundtrips.py --database-url postgresql+asyncpg://...  # WIPES it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from zndraw_joblib_server import JobLibSettings, create_app
from zndraw_joblib_server.testing import (
    api_client,
    create_user,
    reset_postgres,
    running,
    test_auth_settings,
)

P = "/v1/joblib"


async def _round_trips(c: httpx.AsyncClient, job: str, worker: str, count: int) -> None:
    """``count`` tasks, each submitted, claimed, started and completed."""
    for _ in range(count):
        resp = await c.post(f"{P}/rooms/lab/tasks/{job}", json={"payload": {"n": 1}})
        assert resp.status_code == 202, resp.text
        resp = await c.post(f"{P}/tasks/claim", json={"worker_id": worker})
        task = resp.json()["task"]
        assert task is not None, resp.text
        for status in ("running", "completed"):
            body = {"status": status, "worker_id": worker}
            resp = await c.patch(f"{P}/tasks/{task['id']}", json=body)
            assert resp.status_code == 200, resp.text


async def _statements(app: FastAPI, count: int) -> None:
    """``count`` writes, each loading one task and counting its queue position (the hot
    paths' prebuilt statements), in a transaction and (PostgreSQL) outside one."""
    from zndraw_joblib_core import TaskStatus
    from zndraw_joblib_server.storage import get_database, positions, records

    db = get_database(app.state.session_maker, app.state.joblib_settings)
    async with db.read() as session:
        pending = records.TASKS.select().where(records.TASKS.c.status == TaskStatus.PENDING)
        ids = [row[0] for row in (await session.execute(pending)).all()[:1]]
    for n in range(count):
        async with db.write(standalone=n % 2 == 1) as uow:
            task = (await records.load(uow.session, ids))[ids[0]]
            await positions.queue_positions(uow.session, [task])


async def _main(url: str | None, tasks: int, warmup: int, db_only: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        if url is None:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'joblib.db'}"
        else:
            await reset_postgres(url)
        app = create_app(JobLibSettings(database_url=url), test_auth_settings(), sweeper=False)
        async with running(app):
            admin = await create_user(app, "root@example.com", superuser=True)
            async with api_client(app, admin) as client:
                body = {"category": "modifiers", "name": "Bench", "schema": {}}
                resp = await client.put(f"{P}/rooms/lab/jobs", json=body)
                job, worker = resp.json()["full_name"], str(resp.json()["worker_id"])
                await _round_trips(client, job, worker, warmup)
                if db_only:  # one pending task, then its load and position
                    await client.post(f"{P}/rooms/lab/tasks/{job}", json={"payload": {}})
                    await _statements(app, warmup)
                cpu, wall = time.process_time(), time.perf_counter()
                if db_only:
                    await _statements(app, tasks)
                else:
                    await _round_trips(client, job, worker, tasks)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "database": url.partition(":")[0],
        "mode": "statements" if db_only else "round trips",
        "tasks": tasks,
        "cpu_us_per_task": round(cpu / tasks * 1e6),
        "wall_us_per_task": round(wall / tasks * 1e6),
    }


def main() -> None:
    """Parse the options, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="postgresql+asyncpg://... to use and WIPE")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--statements",
        action="store_true",
        help="measure writes of prebuilt statements only (load + position), not requests",
    )
    args = parser.parse_args()
    result = _main(args.database_url, args.tasks, args.warmup, args.statements)
    print(json.dumps(asyncio.run(result)))


if __name__ == "__main__":
    main()
