"""A zndraw-joblib 0.1.7 database, filled by 0.1.7's own server, is imported and served.

The predecessor runs in its own process (uvicorn) on the database; the import runs through
the CLI; then this server serves the imported tasks to a worker over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from zndraw_joblib_server import JobLibSettings, create_app
from zndraw_joblib_server.cli import main
from zndraw_joblib_server.testing import running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

P = "/v1/joblib"
APP = Path(__file__).with_name("predecessor_app.py")
PASSWORDS = {"alice@example.com": "alice-password-1", "bob@example.com": "bob-password-1"}
ROTATE = "@global:modifiers:Rotate"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _predecessor(url: str) -> AsyncIterator[httpx.AsyncClient]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZNDRAW_AUTH_")}
    proc = subprocess.Popen([sys.executable, str(APP), url, str(port)], env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(200):
                try:
                    if (await client.get("/openapi.json")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, "the 0.1.7 server did not start"
                await asyncio.sleep(0.1)
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    resp = await client.post(
        "/auth/jwt/login", data={"username": email, "password": PASSWORDS[email]}
    )
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


async def _fill(url: str) -> dict[str, Any]:
    """Tasks in every status, in several rooms, of ``@global`` and room jobs; one soft
    deleted job. Returns what was made (task ids by the status they ended in)."""
    made: dict[str, Any] = {}
    async with _predecessor(url) as client:
        for email in PASSWORDS:
            body = {"email": email, "password": PASSWORDS[email]}
            assert (await client.post("/auth/register", json=body)).status_code == 201
        alice = await _login(client, "alice@example.com")
        bob = await _login(client, "bob@example.com")

        async def put_job(room: str, category: str, name: str, worker: str) -> None:
            body = {"category": category, "name": name, "schema": {}, "worker_id": worker}
            resp = await client.put(f"{P}/rooms/{room}/jobs", json=body, headers=alice)
            assert resp.status_code in (200, 201), resp.text

        async def submit(room: str, job: str, n: int) -> str:
            resp = await client.post(
                f"{P}/rooms/{room}/tasks/{job}", json={"payload": {"n": n}}, headers=bob
            )
            assert resp.status_code == 202, resp.text
            return str(resp.json()["id"])

        async def claim(worker: str) -> str:
            resp = await client.post(f"{P}/tasks/claim", json={"worker_id": worker}, headers=alice)
            assert resp.status_code == 200, resp.text
            return str(resp.json()["task"]["id"])

        async def move(task: str, status: str, **body: Any) -> None:
            resp = await client.patch(
                f"{P}/tasks/{task}", json={"status": status, **body}, headers=alice
            )
            assert resp.status_code == 200, resp.text

        worker = (await client.post(f"{P}/workers", headers=alice)).json()["id"]
        await put_job("@global", "modifiers", "Rotate", worker)
        await put_job("lab", "analysis", "Count", worker)
        ids = [await submit(room, ROTATE, i) for i, room in enumerate(["lab", "other"] * 3)]
        ids.append(await submit("lab", "lab:analysis:Count", 99))
        done, failed, running, claimed = [await claim(worker) for _ in range(4)]
        await move(done, "running")
        await move(done, "completed")
        await move(failed, "running")
        await move(failed, "failed", error="boom: the input was odd")
        await move(running, "running")
        cancelled = ids[4]
        await move(cancelled, "cancelled")
        made["ended"] = {
            "completed": [done],
            "failed": [failed],
            "running": [running],
            "claimed": [claimed],
            "cancelled": [cancelled],
            "pending": [ids[5], ids[6]],
        }
        # A job whose only worker leaves is soft deleted by 0.1.7.
        gone = (await client.post(f"{P}/workers", headers=alice)).json()["id"]
        await put_job("old", "selections", "Pick", gone)
        resp = await client.delete(f"{P}/workers/{gone}", headers=alice)
        assert resp.status_code == 204, resp.text
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            deleted = (await conn.execute(text("SELECT count(*) FROM job WHERE deleted"))).scalar()
    finally:
        await engine.dispose()
    assert deleted == 1
    return made


async def _import(
    capsys: pytest.CaptureFixture[str], source: str, target: str, *extra: str
) -> str:
    """``zndraw-joblib-server db import-predecessor`` (in a thread: it runs its own loop)."""
    argv = ["db", "import-predecessor", "--from", source, "--database-url", target, *extra]
    await asyncio.to_thread(main, argv)
    return capsys.readouterr().out


async def _counts(url: str, tables: list[str]) -> dict[str, int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                t: int((await conn.execute(text(f'SELECT count(*) FROM "{t}"'))).scalar_one())
                for t in tables
            }
    finally:
        await engine.dispose()


OLD_TABLES = ["job", "task", "worker", "worker_job_link", "user"]


@pytest.mark.parametrize("where", ["same", "other"])
async def test_a_predecessor_database_is_imported_and_served(
    database_url: str, backend: str, tmp_path: Path, where: str, capsys, monkeypatch
) -> None:
    source = database_url if where == "same" else f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setenv("ZNDRAW_JOBLIB_DATABASE_URL", database_url)  # the CLI sets it
    made = await _fill(source)
    before = await _counts(source, OLD_TABLES)

    dry = await _import(capsys, source, database_url, "--dry-run")
    assert "dry run" in dry
    assert "tasks: 7 (claimed or running, now pending again: 2)" in dry
    out = await _import(capsys, source, database_url)
    assert "copied:" in out
    assert "jobs: 3" in out
    assert "tasks: 7 (claimed or running, now pending again: 2)" in out
    assert ("users: 2" if where == "other" else "users: 0") in out
    again = await _import(capsys, source, database_url)
    for what in ("users", "jobs", "workers", "worker-job links"):
        assert f"{what}: 0" in again
    assert "tasks: 0 (" in again
    assert await _counts(source, OLD_TABLES) == before  # the predecessor's tables untouched

    settings = JobLibSettings(database_url=database_url)
    app = create_app(settings, auth_settings(), sweeper=False)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            alice, bob = (
                await _login(client, "alice@example.com"),
                await _login(client, "bob@example.com"),
            )
            ended = made["ended"]
            # Finished tasks are listed with their statuses, errors, rooms and payloads.
            listed = {}
            for room in ("lab", "other"):
                resp = await client.get(f"{P}/rooms/{room}/tasks", headers=bob)
                assert resp.status_code == 200, resp.text
                listed.update({t["id"]: t for t in resp.json()["items"]})
            assert len(listed) == 7
            assert listed[ended["completed"][0]]["status"] == "completed"
            assert listed[ended["failed"][0]]["error"] == "boom: the input was odd"
            assert listed[ended["cancelled"][0]]["status"] == "cancelled"
            assert listed[ended["completed"][0]]["job_name"] == ROTATE
            for task_id in ended["running"] + ended["claimed"]:
                assert listed[task_id]["status"] == "pending"
                assert listed[task_id]["attempt"] == 1
            assert Counter(t["room_id"] for t in listed.values()) == {"lab": 4, "other": 3}

            # A worker of alice's (a superuser: imported jobs have no owner) serves them.
            worker = (await client.post(f"{P}/workers", headers=alice)).json()["id"]
            for room, category, name in (
                ("@global", "modifiers", "Rotate"),
                ("lab", "analysis", "Count"),
            ):
                body = {"category": category, "name": name, "schema": {}, "worker_id": worker}
                resp = await client.put(f"{P}/rooms/{room}/jobs", json=body, headers=alice)
                assert resp.status_code == 200, resp.text  # the imported job
            served = []
            while True:
                resp = await client.post(
                    f"{P}/tasks/claim", json={"worker_id": worker}, headers=alice
                )
                assert resp.status_code == 200, resp.text
                task = resp.json()["task"]
                if task is None:
                    break
                served.append(task["id"])
                update = {"worker_id": worker, "status": "running"}
                resp = await client.patch(f"{P}/tasks/{task['id']}", json=update, headers=alice)
                assert resp.status_code == 200, resp.text
                update = {"worker_id": worker, "status": "completed", "result": task["payload"]}
                resp = await client.patch(f"{P}/tasks/{task['id']}", json=update, headers=alice)
                assert resp.status_code == 200, resp.text
            pending = ended["pending"] + ended["running"] + ended["claimed"]
            assert sorted(served) == sorted(pending)
            for task_id in pending:
                resp = await client.get(f"{P}/tasks/{task_id}", headers=bob)
                task = resp.json()
                assert task["status"] == "completed"
                assert task["result"] == task["payload"]
