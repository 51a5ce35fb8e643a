"""A bare HTTP worker process for contract tests: claims, runs and completes until idle.

Usage: python drain_worker.py BASE_URL TOKEN JOB_ROOM JOB_NAME OUT_FILE [IDLE_ROUNDS]
Prints nothing; writes the ids of the tasks it completed, one per line, to OUT_FILE.
"""

from __future__ import annotations

import sys

import httpx


def main() -> None:
    url, token, room, name, out_path = sys.argv[1:6]
    idle_rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 3
    headers = {"Authorization": f"Bearer {token}"}
    done: list[str] = []
    with httpx.Client(base_url=f"{url}/v1/joblib", headers=headers, timeout=30) as http:
        worker = http.post("/workers").raise_for_status().json()["id"]
        http.put(
            f"/rooms/{room}/jobs",
            json={"category": "modifiers", "name": name, "schema": {}, "worker_id": worker},
        ).raise_for_status()
        idle = 0
        while idle < idle_rounds:
            resp = http.post(
                "/tasks/claim", json={"worker_id": worker}, headers={"Prefer": "wait=1"}
            ).raise_for_status()
            task = resp.json()["task"]
            if task is None:
                idle += 1
                continue
            idle = 0
            for status in ("running", "completed"):
                http.patch(
                    f"/tasks/{task['id']}",
                    json={"status": status, "worker_id": worker, "result": None},
                ).raise_for_status()
            done.append(task["id"])
        http.delete(f"/workers/{worker}").raise_for_status()
    with open(out_path, "w") as out:
        out.write("\n".join(done))


if __name__ == "__main__":
    main()
