"""The worker loop's transports against the real server: lean (default) and httpx.

The worker loop sends its claim-and-report requests and heartbeats over kept-alive
``http.client`` connections unless ``ZNDRAW_JOBLIB_TRANSPORT=httpx``. Both run tasks end to
end, and both carry on after the server restarted (its kept-alive connections closed).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from zndraw_joblib_client import Category, Extension, JobManager, TaskStatus

pytestmark = pytest.mark.slow

WAIT = 60.0


class Triple(Extension):
    """Returns three times ``n``."""

    category: ClassVar[Category] = Category.MODIFIER
    n: int = 0

    def run(self, task: Any = None, **kwargs: Any) -> int:
        return self.n * 3


def _results(client: JobManager, ids: list[Any]) -> list[Any]:
    out = []
    for task_id in ids:
        task = client.wait(task_id, WAIT)
        assert task.status is TaskStatus.COMPLETED, task.error
        out.append(task.result)
    return out


@pytest.mark.parametrize("transport", ["lean", "httpx"])
def test_worker_loop_runs_tasks_and_survives_a_server_restart(
    server: Any, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZNDRAW_JOBLIB_TRANSPORT", transport)
    token = server.token("alice@example.com")
    with (
        JobManager(server.url, token=token) as worker,
        JobManager(server.url, token=token) as client,
    ):
        worker.register(Triple, room="lab")
        name = "lab:modifiers:Triple"
        worker.start(claim_wait=2.0, heartbeat_interval=0.5, idle_heartbeat_after=0.5)
        try:
            first = [client.submit(name, "lab", payload={"n": n}).id for n in range(3)]
            assert _results(client, first) == [0, 3, 6]

            # the server goes away and comes back on the same port and database: every
            # kept-alive connection the worker holds is closed under it
            server.stop()
            server.start()
            second = [client.submit(name, "lab", payload={"n": n}).id for n in (10, 11)]
            assert _results(client, second) == [30, 33]
        finally:
            worker.stop(timeout=WAIT)
        sent_by = type(worker.worker_http).__name__
        assert sent_by == ("LeanSession" if transport == "lean" else "HttpSession")
