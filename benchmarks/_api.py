"""Synchronous set-up calls against the server: a user, jobs, workers, counts."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["PREFIX", "Api", "BenchError", "Heartbeat", "Job", "login"]

PREFIX = "/v1/joblib"


class BenchError(RuntimeError):
    """Something is broken (an unexpected answer, lost or duplicate tasks)."""


def login(base_url: str) -> str:
    """Register a fresh user and return its bearer token (dev mode: a superuser)."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    password = "bench-password-0123456789"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        resp = client.post("/auth/register", json={"email": email, "password": password})
        _check(resp, 201)
        resp = client.post("/auth/jwt/login", data={"username": email, "password": password})
        _check(resp, 200)
        return str(resp.json()["access_token"])


def _check(resp: httpx.Response, *ok: int) -> httpx.Response:
    if resp.status_code not in ok:
        raise BenchError(
            f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}: "
            f"{resp.text[:500]}"
        )
    return resp


@dataclass(frozen=True)
class Job:
    """A registered job, its room and the workers serving it."""

    id: str
    room: str
    full_name: str
    worker_ids: list[str]


class Api:
    """A small synchronous client for set-up and verification (not for load)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.client = httpx.Client(
            base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )

    def close(self) -> None:
        """Close the connection."""
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_worker(self) -> str:
        """``POST /workers``; the new worker's id."""
        return str(_check(self.client.post(f"{PREFIX}/workers"), 201).json()["id"])

    def job_with_workers(self, room: str, name: str, workers: int) -> Job:
        """Register ``room:modifiers:name`` with ``workers`` new workers linked to it."""
        ids: list[str] = []
        body: dict[str, Any] = {}
        for _ in range(max(workers, 1)):
            worker_id = self.create_worker()
            ids.append(worker_id)
            body = _check(
                self.client.put(
                    f"{PREFIX}/rooms/{room}/jobs",
                    json={
                        "category": "modifiers",
                        "name": name,
                        "schema": {},
                        "worker_id": worker_id,
                    },
                ),
                200,
                201,
            ).json()
        return Job(id=str(body["id"]), room=room, full_name=body["full_name"], worker_ids=ids)

    def submit(self, job: Job, payload: dict[str, Any] | None = None) -> str:
        """Submit one task; its id."""
        resp = self.client.post(
            f"{PREFIX}/rooms/{job.room}/tasks/{job.full_name}", json={"payload": payload or {}}
        )
        return str(_check(resp, 202).json()["id"])

    def count(self, job: Job, status: str | None = None) -> int:
        """How many of the job's tasks (in its room) have ``status`` (all when None)."""
        params: dict[str, Any] = {"limit": 0}
        if status:
            params["status"] = status
        resp = self.client.get(
            f"{PREFIX}/rooms/{job.room}/jobs/{job.full_name}/tasks", params=params
        )
        return int(_check(resp, 200).json()["total"])

    def user_id(self) -> str:
        """The id of the logged-in user."""
        return str(_check(self.client.get("/users/me"), 200).json()["id"])


class Heartbeat:
    """Keep a job's workers alive (``PATCH /workers/{id}`` every few seconds) in a thread.

    The sweeper removes workers silent for ``worker_timeout_seconds`` (60 s); a long submit
    phase before the workers start claiming would otherwise lose them. Start it only after
    forking the load generators (a thread must not be running across ``fork``).
    """

    def __init__(self, base_url: str, token: str, worker_ids: list[str], every: float = 10.0):
        self._args = (base_url, token, worker_ids, every)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        base_url, token, worker_ids, every = self._args
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
            while not self._stop.wait(every):
                for worker_id in worker_ids:
                    resp = client.patch(f"{PREFIX}/workers/{worker_id}")
                    if resp.status_code != 200 and len(self.errors) < 5:
                        self.errors.append(f"heartbeat -> {resp.status_code}: {resp.text[:200]}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
