"""The dashboard in a real browser: headless Chromium driven by Playwright.

Logs in through the page's form, sees a submitted task appear and complete without a
reload, cancels one, retries it, removes a worker, and keeps a screenshot of every page
(laptop and phone size) under ``test-artifacts/dashboard/<backend>/`` (gitignored; the
paths are printed). Skips when Chromium is missing, except in CI (``CI=true``): there it
fails, as .ci/run installs Debian's ``chromium``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD  # type: ignore[import-not-found]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
P = "/v1/joblib"
WAIT_MS = 20_000


@pytest.fixture
def browser(server: Any) -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Started after the server (whose database reset runs its own event loop): Playwright's
    # synchronous API keeps a loop running on this thread while the browser is open.

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Api:
    """The queue's REST API as the admin (a hand-driven worker and a submitter)."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url + P, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.client.request(method, path, **kw)
        assert resp.status_code < 300, resp.text
        return resp.json() if resp.content else None

    def worker_with_job(self, name: str) -> tuple[str, str]:
        worker = self.ok("POST", "/workers")["id"]
        body = {"category": "modifiers", "name": name, "schema": {}, "worker_id": worker}
        job = self.ok("PUT", "/rooms/lab/jobs", json=body)
        return worker, job["full_name"]

    def submit(self, job: str, **payload: Any) -> str:
        return str(self.ok("POST", f"/rooms/lab/tasks/{job}", json={"payload": payload})["id"])

    def run(self, worker: str, task_id: str) -> None:
        claimed = self.ok("POST", "/tasks/claim", json={"worker_id": worker})["task"]
        assert claimed["id"] == task_id
        self.ok("PATCH", f"/tasks/{task_id}", json={"status": "running", "worker_id": worker})
        self.ok(
            "PATCH",
            f"/tasks/{task_id}",
            json={"status": "completed", "worker_id": worker, "result": {"answer": 42}},
        )


def test_dashboard_in_chromium(server: Any, browser: Any, backend: str) -> None:
    from playwright.sync_api import expect

    shots = ARTIFACTS / backend
    shots.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []

    def shot(page: Any, name: str) -> None:
        path = shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)

    api = Api(server.url, server.admin_token())
    worker, job = api.worker_with_job("Relax")
    spare, _ = api.worker_with_job("Spare")

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{server.url}/joblib/")
    expect(page.locator("#login-form")).to_be_visible()
    shot(page, "login")
    page.fill("input[name=username]", ADMIN_EMAIL)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#page-overview")).to_be_visible()
    expect(page.locator("#rooms li", has_text="lab")).to_be_visible(timeout=WAIT_MS)

    # A task submitted elsewhere appears, then completes, without a reload.
    page.click("nav a[data-page=tasks]")
    first = api.submit(job, steps=3)
    row = page.locator(f"tr[data-task='{first}']")
    expect(row).to_have_attribute("data-status", "pending", timeout=WAIT_MS)
    api.run(worker, first)
    expect(row).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    row.locator("summary", has_text="result").click()
    expect(row).to_contain_text('"answer": 42')

    # Cancel one from the page, then retry it (a new task marked as its retry).
    second = api.submit(job, steps=5)
    row = page.locator(f"tr[data-task='{second}']")
    expect(row).to_have_attribute("data-status", "pending", timeout=WAIT_MS)
    row.get_by_role("button", name="cancel").click()
    expect(row).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    row.get_by_role("button", name="retry").click()
    retry = page.locator("tr[data-status=pending]", has_text=f"retry of {second[:8]}")
    expect(retry).to_be_visible(timeout=WAIT_MS)
    retried = api.ok("GET", "/rooms/lab/tasks?status=pending")["items"]
    assert [t["payload"] for t in retried] == [{"steps": 5}]

    # A running task shows its progress and its worker's current task.
    running = retried[0]["id"]
    assert api.ok("POST", "/tasks/claim", json={"worker_id": worker})["task"]["id"] == running
    update = {"status": "running", "worker_id": worker, "progress": 0.5, "message": "step 2 of 4"}
    api.ok("PATCH", f"/tasks/{running}", json=update)
    row = page.locator(f"tr[data-task='{running}']")
    expect(row).to_have_attribute("data-status", "running", timeout=WAIT_MS)
    expect(row.locator("progress")).to_have_attribute("value", "0.5")
    expect(row).to_contain_text("step 2 of 4")
    shot(page, "tasks")

    # Filter by status.
    page.select_option("#filters select[name=status]", "completed")
    expect(page.locator("#tasks-table tbody tr")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#tasks-table tbody tr").first).to_have_attribute("data-task", first)
    shot(page, "tasks-filtered")
    page.select_option("#filters select[name=status]", "")

    page.click("nav a[data-page=jobs]")
    expect(page.locator(f"tr[data-job='{job}']")).to_contain_text("1")  # one live worker
    page.locator(f"tr[data-job='{job}']").get_by_role("button", name="schema").click()
    expect(page.locator("#schema")).to_contain_text(job)
    shot(page, "jobs")

    page.click("nav a[data-page=workers]")
    spare_row = page.locator(f"tr[data-worker='{spare}']")
    expect(spare_row).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(f"tr[data-worker='{worker}']")).to_contain_text(running[:8])
    shot(page, "workers")
    spare_row.get_by_role("button", name="remove").click()
    expect(spare_row).to_have_count(0, timeout=WAIT_MS)

    page.click("nav a[data-page=overview]")
    expect(page.locator("#throughput-now")).to_contain_text("1 completed", timeout=WAIT_MS)
    expect(page.locator("#chart-throughput polyline")).to_have_count(2)
    shot(page, "overview")
    context.close()

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = phone.new_page()
    page.goto(f"{server.url}/joblib/#tasks")
    page.fill("input[name=username]", ADMIN_EMAIL)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator(f"tr[data-task='{first}']")).to_be_visible(timeout=WAIT_MS)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    shot(page, "tasks-phone")
    phone.close()

    for path in taken:
        print(f"screenshot: {path}")
    assert re.search(r"zndraw_joblib_tasks_total\{", httpx.get(f"{server.url}/metrics").text)
