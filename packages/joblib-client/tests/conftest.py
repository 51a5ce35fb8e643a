"""A small in-memory fake of the zndraw-joblib server, served through httpx.MockTransport."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import pytest

from zndraw_joblib_client import JobManager, RetryPolicy

BASE = "http://joblib.test"
P = "/v1/joblib"
TERMINAL = {"completed", "failed", "cancelled"}
ALLOWED = {
    "pending": {"claimed", "cancelled"},
    "claimed": {"running", "failed", "cancelled"},
    "running": {"completed", "failed", "cancelled"},
}


def now() -> str:
    return datetime.now(UTC).isoformat()


def problem(status: int, slug: str, detail: str = "") -> httpx.Response:
    return httpx.Response(
        status,
        json={"type": f"/v1/problems/{slug}", "title": slug, "status": status, "detail": detail},
        headers={"content-type": "application/problem+json"},
    )


@dataclass
class Seen:
    method: str
    path: str
    headers: httpx.Headers
    params: dict[str, list[str]]
    body: Any


@dataclass
class FakeServer:
    """In-memory joblib server: enough of the wire contract to drive the client."""

    tokens: set[str] = field(default_factory=lambda: {"good-token"})
    users: dict[str, str] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str, str], str] = field(default_factory=dict)
    batch_idempotency: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    failures: list[tuple[str, str, Any]] = field(default_factory=list)
    long_poll: bool = True
    lean: bool = False  # honours a claim's ``start`` and an update's ``claim_next``
    on_get_task: Callable[[dict[str, Any]], None] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- test controls --------------------------------------------------------------------

    def fail(self, method: str, path_regex: str, *outcomes: Any) -> None:
        """Answer the next matching requests with these statuses / raise these exceptions."""
        for outcome in outcomes:
            self.failures.append((method, path_regex, outcome))

    def seen(self, method: str, path_regex: str = "") -> list[Seen]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.method == method and re.fullmatch(path_regex or ".*", r.path)
            ]

    def reset_database(self) -> None:
        with self.lock:
            self.workers.clear()
            self.jobs.clear()

    def add_task(self, job_name: str, payload: dict[str, Any], room: str = "room1") -> str:
        with self.lock:
            return self._new_task(job_name, room, payload)["id"]

    # -- transport ------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path)
        raw = request.content.decode() if request.content else ""
        ctype = request.headers.get("content-type", "")
        body: Any = None
        if raw and "json" in ctype:
            body = json.loads(raw)
        elif raw:
            body = {k: v[0] for k, v in parse_qs(raw).items()}
        seen = Seen(
            request.method, path, request.headers, parse_qs(request.url.query.decode()), body
        )
        with self.lock:
            self.requests.append(seen)
            for i, (method, regex, outcome) in enumerate(self.failures):
                if method == request.method and re.fullmatch(regex, path):
                    del self.failures[i]
                    if outcome == "pass":
                        break
                    if isinstance(outcome, Exception):
                        raise outcome
                    if isinstance(outcome, httpx.Response):
                        return outcome
                    return httpx.Response(outcome, json={"detail": "injected"})
        if path.startswith("/auth/"):
            return self._auth(path, body)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return httpx.Response(401, json={"detail": "Unauthorized"})
        with self.lock:
            return self._route(seen)

    def _auth(self, path: str, body: Any) -> httpx.Response:
        if path == "/auth/jwt/login":
            if self.users.get(body["username"]) != body["password"]:
                return httpx.Response(400, json={"detail": "LOGIN_BAD_CREDENTIALS"})
            token = f"token-{body['username']}"
            self.tokens.add(token)
            return httpx.Response(200, json={"access_token": token, "token_type": "bearer"})
        if path == "/auth/register":
            if body["email"] in self.users:
                return httpx.Response(400, json={"detail": "REGISTER_USER_ALREADY_EXISTS"})
            self.users[body["email"]] = body["password"]
            return httpx.Response(201, json={"id": str(uuid.uuid4()), "email": body["email"]})
        return httpx.Response(404, json={"detail": "Not Found"})

    def _route(self, r: Seen) -> httpx.Response:
        m, path = r.method, r.path
        if m == "POST" and path == f"{P}/workers":
            wid = str(uuid.uuid4())
            self.workers[wid] = {"id": wid, "last_heartbeat": now()}
            return httpx.Response(201, json=self.workers[wid])
        if match := re.fullmatch(f"{P}/workers/([^/]+)", path):
            wid = match[1]
            if wid not in self.workers:
                return problem(404, "worker-not-found")
            if m == "DELETE":
                del self.workers[wid]
                for task in self.tasks.values():
                    if task["worker_id"] == wid and task["status"] in {"claimed", "running"}:
                        task["status"] = "pending"
                return httpx.Response(204)
            cancel = [
                t["id"]
                for t in self.tasks.values()
                if t["worker_id"] == wid and t["cancel_requested"] and t["status"] not in TERMINAL
            ]
            return httpx.Response(
                200,
                json={**self.workers[wid], "last_heartbeat": now(), "cancel_requested": cancel},
            )
        if m == "GET" and path == f"{P}/workers":
            return self._page(list(self.workers.values()), r)
        if match := re.fullmatch(f"{P}/rooms/([^/]+)/jobs", path):
            return self._register(match[1], r.body) if m == "PUT" else self._list_jobs(match[1], r)
        if match := re.fullmatch(f"{P}/rooms/([^/]+)/jobs/([^/]+)", path):
            job = self.jobs.get(match[2])
            if job is None or job["room_id"] not in (match[1], "@global"):
                return problem(404, "job-not-found", f"no job {match[2]}")
            return httpx.Response(200, json=job)
        if match := re.fullmatch(f"{P}/rooms/([^/]+)/workers", path):
            return self._page(list(self.workers.values()), r)
        if match := re.fullmatch(f"{P}/rooms/([^/]+)/tasks/([^/]+)", path):
            return self._submit(match[1], match[2], r)
        if m == "POST" and (match := re.fullmatch(f"{P}/rooms/([^/]+)/jobs/([^/]+)/tasks", path)):
            return self._submit_batch(match[1], match[2], r)
        if match := re.fullmatch(f"{P}/rooms/([^/]+)/(?:jobs/([^/]+)/)?tasks", path):
            items = [
                t
                for t in self.tasks.values()
                if t["room_id"] == match[1] and (match[2] is None or t["job_name"] == match[2])
            ]
            if status := r.params.get("status"):
                items = [t for t in items if t["status"] == status[0]]
            return self._page(items, r)
        if m == "POST" and path == f"{P}/tasks/claim":
            return self._claim(r)
        if m == "PATCH" and path == f"{P}/tasks":
            return self._batch(r.body)
        if match := re.fullmatch(f"{P}/tasks/([^/]+)/cancel", path):
            task = self.tasks.get(match[1])
            if task is None:
                return problem(404, "task-not-found")
            if task["status"] == "pending":
                task["status"] = "cancelled"
            elif task["status"] not in TERMINAL:
                task["cancel_requested"] = True
            return httpx.Response(200, json=task)
        if match := re.fullmatch(f"{P}/tasks/([^/]+)", path):
            task = self.tasks.get(match[1])
            if task is None:
                return problem(404, "task-not-found")
            if m == "GET":
                if self.on_get_task is not None:
                    self.on_get_task(task)
                headers = {}
                if self.long_poll and "prefer" in r.headers:
                    headers["Preference-Applied"] = r.headers["prefer"]
                return httpx.Response(200, json=task, headers=headers)
            status, body = self._update(task, r.body)
            if status == 200 and self.lean and r.body.get("claim_next"):
                body["claimed"] = self._claimed(r.body["claim_next"])
            return httpx.Response(status, json=body)
        return httpx.Response(404, json={"detail": "Not Found"})

    # -- resources ------------------------------------------------------------------------

    def _page(self, items: list[dict[str, Any]], r: Seen) -> httpx.Response:
        limit = int(r.params.get("limit", ["50"])[0])
        offset = int(r.params.get("offset", ["0"])[0])
        return httpx.Response(
            200,
            json={
                "items": items[offset : offset + limit],
                "total": len(items),
                "limit": limit,
                "offset": offset,
            },
        )

    def _register(self, room: str, body: dict[str, Any]) -> httpx.Response:
        wid = body.get("worker_id")
        if wid is not None and wid not in self.workers:
            return problem(404, "worker-not-found")
        full = f"{room}:{body['category']}:{body['name']}"
        job = self.jobs.get(full)
        status = 200 if job is not None and job["schema"] == body["schema"] else 201
        job = job or {
            "id": str(uuid.uuid4()),
            "room_id": room,
            "category": body["category"],
            "name": body["name"],
            "full_name": full,
            "schema": body["schema"],
            "workers": [],
        }
        if wid not in job["workers"]:
            job["workers"].append(wid)
        self.jobs[full] = job
        return httpx.Response(status, json={**job, "worker_id": wid})

    def _list_jobs(self, room: str, r: Seen) -> httpx.Response:
        items = [j for j in self.jobs.values() if j["room_id"] in (room, "@global")]
        return self._page(items, r)

    def _new_task(self, job_name: str, room: str, payload: dict[str, Any]) -> dict[str, Any]:
        tid = str(uuid.uuid4())
        self.tasks[tid] = {
            "id": tid,
            "job_name": job_name,
            "room_id": room,
            "status": "pending",
            "created_at": now(),
            "worker_id": None,
            "payload": payload,
            "attempt": 0,
            "cancel_requested": False,
            "progress": None,
            "message": None,
            "result": None,
            "error": None,
            "retry": None,
        }
        return self.tasks[tid]

    def _submit(self, room: str, job_name: str, r: Seen) -> httpx.Response:
        if job_name not in self.jobs:
            return problem(404, "job-not-found", f"no job {job_name}")
        key = r.headers.get("idempotency-key")
        if key and (job_name, room, key) in self.idempotency:
            return httpx.Response(200, json=self.tasks[self.idempotency[(job_name, room, key)]])
        task = self._new_task(job_name, room, r.body["payload"])
        if key:
            self.idempotency[(job_name, room, key)] = task["id"]
        return httpx.Response(202, json=task, headers={"Location": f"{P}/tasks/{task['id']}"})

    def _submit_batch(self, room: str, job_name: str, r: Seen) -> httpx.Response:
        """All or nothing; a payload key the job's schema does not name is refused."""
        job = self.jobs.get(job_name)
        if job is None:
            return problem(404, "job-not-found", f"no job {job_name}")
        items = r.body["items"]
        if not 1 <= len(items) <= 1000:
            return httpx.Response(422, json={"detail": [{"msg": "1 to 1000 items"}]})
        key = r.headers.get("idempotency-key")
        if key and (job_name, room, key) in self.batch_idempotency:
            ids = self.batch_idempotency[(job_name, room, key)]
            return httpx.Response(200, json={"items": [self.tasks[i] for i in ids]})
        known = set(job["schema"].get("properties", {}))
        for index, item in enumerate(items):
            unknown = set(item["payload"]) - known
            if unknown:
                return problem(422, "invalid-payload", f"items[{index}]: {sorted(unknown)}")
        created = [self._new_task(job_name, room, item["payload"]) for item in items]
        for task, item in zip(created, items, strict=True):
            task["priority"] = item.get("priority", 0)
        if key:
            self.batch_idempotency[(job_name, room, key)] = [t["id"] for t in created]
        return httpx.Response(202, json={"items": created})

    def _claimed(self, body: dict[str, Any]) -> dict[str, Any]:
        """The claim of a lean server's ``claim_next`` (no waiting)."""
        if body["worker_id"] not in self.workers:
            return {"task": None, "tasks": [], "problem": problem(404, "worker-not-found").json()}
        tasks = self._take(body)
        return {"task": tasks[0] if tasks else None, "tasks": tasks, "problem": None}

    def _take(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        wid = body["worker_id"]
        served = {name for name, job in self.jobs.items() if wid in job["workers"]}
        status = "running" if self.lean and body.get("start") else "claimed"
        claimed = []
        for task in self.tasks.values():
            if len(claimed) >= body.get("max_tasks", 1):
                break
            if task["status"] == "pending" and task["job_name"] in served:
                task.update(status=status, worker_id=wid, attempt=task["attempt"] + 1)
                claimed.append(dict(task))
        return claimed

    def _claim(self, r: Seen) -> httpx.Response:
        wid = r.body["worker_id"]
        if wid not in self.workers:
            return problem(404, "worker-not-found")
        claimed = self._take(r.body)
        headers = {}
        if "prefer" in r.headers and self.long_poll:
            headers["Preference-Applied"] = r.headers["prefer"]
            if not claimed:
                self.lock.release()
                try:
                    time.sleep(0.01)
                finally:
                    self.lock.acquire()
        first = claimed[0] if claimed else None
        return httpx.Response(200, json={"task": first, "tasks": claimed}, headers=headers)

    def _update(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        wid = body.get("worker_id")
        if wid is not None and (wid != task["worker_id"] or wid not in self.workers):
            return 409, {
                "type": "/v1/problems/lease-lost",
                "title": "Conflict",
                "status": 409,
                "detail": "lease lost",
            }
        new = body.get("status")
        if new is not None and new not in ALLOWED.get(task["status"], set()):
            return 409, {
                "type": "/v1/problems/invalid-task-transition",
                "title": "Conflict",
                "status": 409,
                "detail": f"{task['status']} -> {new}",
            }
        if new is not None:
            task["status"] = new
        for key in ("error", "progress", "message", "result", "retry"):
            if key in body:
                task[key] = body[key]
        return 200, dict(task)

    def _batch(self, body: list[dict[str, Any]] | dict[str, Any]) -> httpx.Response:
        items = body if isinstance(body, list) else body["items"]
        claim = None if isinstance(body, list) else body.get("claim_next")
        out = []
        for item in items:
            task = self.tasks.get(item["task_id"])
            if task is None:
                out.append({"task_id": item["task_id"], "ok": False})
                continue
            status, body = self._update(task, item)
            if status == 200:
                out.append({"task_id": item["task_id"], "ok": True, "task": body})
            else:
                out.append({"task_id": item["task_id"], "ok": False, "problem": body})
        answer: dict[str, Any] = {"items": out}
        if self.lean and claim:
            answer["claimed"] = self._claimed(claim)
        return httpx.Response(200, json=answer)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_manager(server: FakeServer, sleeps: list[float]) -> Iterator[Callable[..., JobManager]]:
    made: list[JobManager] = []

    def make(**kwargs: Any) -> JobManager:
        kwargs.setdefault("token", "good-token")
        kwargs.setdefault("retry", RetryPolicy(attempts=4, base_delay=0.0, jitter=0.0))
        kwargs.setdefault("sleep", sleeps.append)
        client = httpx.Client(transport=httpx.MockTransport(server.handle), base_url=BASE)
        manager = JobManager(client=client, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        with contextlib.suppress(Exception):
            manager.stop(timeout=5)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition the test needs (a safety cap only; never asserted on)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


@pytest.fixture
def until() -> Callable[..., None]:
    return wait_until
