"""Property-based fuzzing of the whole /v1/joblib API from its OpenAPI schema (schemathesis).

A live server (SQLite file) is driven with generated requests, authenticated as a regular
user who owns a worker and a job, so generated ids sometimes hit real rows. Every answer must
be a non-5xx that conforms to the schema and status codes the API declares.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import LiveServer, database_url  # type: ignore[import-not-found]
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

MAX_EXAMPLES = int(os.environ.get("ZNDRAW_JOBLIB_FUZZ_EXAMPLES", "30"))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A live server with a user, a worker, a job and a task to aim at."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    live = LiveServer(database_url(str(request.param), tmp), tmp / "server.log")
    live.start()
    try:
        token = live.token("fuzzer@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{live.url}/v1/joblib", headers=headers) as http:
            job = http.put(
                "/rooms/lab/jobs",
                json={"category": "modifiers", "name": "Fuzz", "schema": {"type": "object"}},
            ).json()
            http.post(f"/rooms/lab/tasks/{job['full_name']}", json={"payload": {}})
        yield {"url": live.url, "headers": headers}
    finally:
        live.stop()


def test_api_never_errors_and_matches_its_schema(fuzz_target: dict[str, Any]) -> None:
    """Every operation, MAX_EXAMPLES generated requests each: no 5xx, no schema breach."""
    schema = schemathesis.openapi.from_url(f"{fuzz_target['url']}/openapi.json")
    schema = schema.include(path_regex="^/v1/joblib/")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            headers = dict(fuzz_target["headers"])
            if case.headers and any(k.lower() == "prefer" for k in case.headers):
                case.headers = {k: v for k, v in case.headers.items() if k.lower() != "prefer"}
                headers["Prefer"] = "wait=0"  # generated long-polls must not stall the run
            case.call_and_validate(
                base_url=fuzz_target["url"],
                headers=headers,
                # Business rules may refuse well-shaped data (an unknown category, a payload
                # that breaks the job's schema) and accept loosely typed data: those two
                # checks judge the API's rules, not its robustness or its honesty.
                excluded_checks=[positive_data_acceptance, negative_data_rejection],
            )

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}"[:3000])
    assert operations >= 14
    assert not failures, "\n\n".join(failures)
