"""Every code block of README.md and docs/*.md runs, or says why it does not.

Fenced blocks tagged ``python``/``py`` or ``bash``/``sh``/``shell`` are executed in document
order against a reference server started for the document (SQLite), with its URL in place of
``http://127.0.0.1:8000`` and the workspace's commands in place of ``python3 tools/uv.py
run`` and ``uv run``. Bash blocks start with the ``export`` lines of the document's earlier
bash blocks (the README's "same two export lines"). An HTML comment on the line before a
fence changes what happens:

* ``<!-- snippet: skip (reason) -->``: not run (the reason is required);
* ``<!-- snippet: server -->``: starts the server: the fixture's server stands in for it;
* ``<!-- snippet: background -->``: runs in the background until the document is done, then
  gets SIGINT (Ctrl-C) and must exit 0; the next block waits until a new worker appears;
* ``<!-- snippet: expect TEXT -->``: runs, and its output must contain TEXT;
* ``<!-- snippet: host-app -->``: a host's app module: served with uvicorn on a fresh
  database, then a user registers, a job is registered and a task submitted and read.

Blocks in other languages (``text``, ``json``, ...) are output samples and are not run. A
python or bash block with an unknown marker fails the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import SECRET, LiveServer, database_url, free_port  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python", "py", "bash", "sh", "shell"}
MARKERS = {"skip", "server", "background", "expect", "host-app"}
PLACEHOLDER_URL = "http://127.0.0.1:8000"
MARKER = re.compile(r"^<!--\s*snippet:\s*([\w-]+)\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass
class Block:
    """One fenced code block of a document."""

    path: Path
    line: int
    lang: str
    marker: str | None
    argument: str
    code: str

    @property
    def where(self) -> str:
        """``file:line`` of the block's opening fence."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def python(self) -> bool:
        """Whether the block is Python (else shell)."""
        return self.lang in ("python", "py")


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of ``path``, with the marker comment before each."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    previous = ""
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marker = MARKER.match(previous)
        found.append(
            Block(
                path=path,
                line=start + 1,
                lang=opening.group(1).lower(),
                marker=marker.group(1) if marker else None,
                argument=marker.group(2) if marker else "",
                code="\n".join(body) + "\n",
            )
        )
        previous = ""
        i += 1
    return found


def test_every_python_and_shell_block_is_run_or_marked() -> None:
    problems = []
    for path in DOCUMENTS:
        for block in blocks(path):
            if block.lang == "":
                problems.append(f"{block.where}: a fence without a language")
            if block.lang not in RUNNABLE:
                continue
            if block.marker is not None and block.marker not in MARKERS:
                problems.append(f"{block.where}: unknown marker {block.marker!r}")
            if block.marker in ("skip", "expect") and not block.argument:
                problems.append(f"{block.where}: '{block.marker}' needs a reason or a text")
    assert problems == []


def test_the_parser_finds_markers_and_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "x\n\n<!-- snippet: skip (why) -->\n```bash\necho 1\n```\n\n```python\nprint(2)\n```\n"
    )
    first, second = blocks(doc)
    assert (first.lang, first.marker, first.argument, first.code) == (
        "bash",
        "skip",
        "(why)",
        "echo 1\n",
    )
    assert (second.lang, second.marker, second.code) == ("python", None, "print(2)\n")


def _documents_with_runnable_blocks() -> list[Path]:
    return [
        path
        for path in DOCUMENTS
        if any(b.lang in RUNNABLE and b.marker not in ("skip", "server") for b in blocks(path))
    ]


@pytest.fixture
def doc_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A reference server on a fresh SQLite file."""
    live = LiveServer(database_url("sqlite", tmp_path), tmp_path / "server.log")
    live.start()
    try:
        yield live
    finally:
        live.stop()


def _environment(url: str) -> dict[str, str]:
    env = dict(os.environ)
    # The workspace's commands (zndraw-joblib, python) come first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["ZNDRAW_JOBLIB_URL"] = url
    env.pop("VIRTUAL_ENV", None)
    return env


def _adapt(code: str, url: str) -> str:
    code = code.replace(PLACEHOLDER_URL, url)
    return code.replace("python3 tools/uv.py run ", "").replace("uv run ", "")


def _worker_count(server: LiveServer, token: str) -> int:
    resp = httpx.get(
        f"{server.url}/v1/joblib/workers",
        headers={"Authorization": f"Bearer {token}"},
        params={"limit": 0},
        timeout=10,
    )
    resp.raise_for_status()
    return int(resp.json()["total"])


def _check_host_app(block: Block, tmp_path: Path) -> None:
    module = tmp_path / "snippet_host_app.py"
    module.write_text(block.code)
    port = free_port()
    env = {
        **os.environ,
        "ZNDRAW_JOBLIB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'host.db'}",
        "ZNDRAW_AUTH_SECRET_KEY": SECRET,
    }
    log = tmp_path / "host-app.log"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path)),
            *("snippet_host_app:app", "--port", str(port), "--log-level", "warning"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"{block.where}: app exited\n{log.read_text()}"
            try:
                httpx.get(f"{base}/docs", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, f"{block.where}: app did not start"
                time.sleep(0.1)
        creds = {"email": "host@example.com", "password": "password123"}
        httpx.post(f"{base}/auth/register", json=creds, timeout=10).raise_for_status()
        login = httpx.post(
            f"{base}/auth/jwt/login",
            data={"username": creds["email"], "password": creds["password"]},
            timeout=10,
        )
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            job = http.put(
                "/v1/joblib/rooms/lab/jobs",
                json={"category": "modifiers", "name": "Scale", "schema": {}},
            )
            assert job.status_code in (200, 201), job.text
            task = http.post("/v1/joblib/rooms/lab/tasks/lab:modifiers:Scale", json={})
            assert task.status_code == 202, task.text
            read = http.get(f"/v1/joblib/tasks/{task.json()['id']}")
            assert read.status_code == 200, read.text
            assert read.json()["status"] == "pending"
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", _documents_with_runnable_blocks(), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_snippets_of_a_document_run(
    path: Path, doc_server: LiveServer, tmp_path: Path
) -> None:
    env = _environment(doc_server.url)
    admin = doc_server.admin_token()
    exports: list[str] = []
    background: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
    workers_before: int | None = None
    try:
        for block in blocks(path):
            if block.lang not in RUNNABLE or block.marker in ("skip", "server"):
                continue
            if workers_before is not None:
                deadline = time.monotonic() + 60
                while _worker_count(doc_server, admin) <= workers_before:
                    proc_block, proc, log = background[-1]
                    assert proc.poll() is None, f"{proc_block.where} exited: {log.read_text()}"
                    assert time.monotonic() < deadline, f"{proc_block.where}: no worker came"
                    time.sleep(0.2)
                workers_before = None
            if block.marker == "host-app":
                _check_host_app(block, tmp_path)
                continue
            code = _adapt(block.code, doc_server.url)
            if block.python:
                argv = [sys.executable, "-c", code]
            else:
                script = "\n".join([*exports, code])
                exports += [ln for ln in code.splitlines() if ln.startswith("export ")]
                argv = ["bash", "-euo", "pipefail", "-c", script]
            if block.marker == "background":
                log = tmp_path / f"background-{block.line}.log"
                workers_before = _worker_count(doc_server, admin)
                proc = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=log.open("ab"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                background.append((block, proc, log))
                continue
            done = subprocess.run(
                argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
            )
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"{block.where} failed:\n{output}"
            if block.marker == "expect":
                assert block.argument in output, f"{block.where}: no {block.argument!r}:\n{output}"
        for block, proc, log in background:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            assert proc.wait(60) == 0, f"{block.where} after Ctrl-C:\n{log.read_text()}"
    finally:
        for _, proc, _ in background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
