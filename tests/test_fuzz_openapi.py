"""Property-based fuzzing of the whole API from its OpenAPI schema (schemathesis).

A live server is driven with generated requests: ``/v1/joblib`` authenticated as a regular
user who owns a worker and a job, so generated ids sometimes hit real rows; ``/auth`` and
``/users`` as the admin, each operation alone and then statefully (register, read, change and
delete the new user through OpenAPI links). Every answer must be a non-5xx that conforms to
the schema and status codes the API declares.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import LiveServer, database_url  # type: ignore[import-not-found]
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.generation.stateful import run_state_machine_as_test

MAX_EXAMPLES = int(os.environ.get("ZNDRAW_JOBLIB_FUZZ_EXAMPLES", "30"))
# at most this many Hypothesis sessions for the stateful run's examples (see below)
_FRESH_SESSIONS = 20


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A live server with a user, a worker, a job and a task to aim at."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    # generated logins and registrations must not run into the per-address rate limits
    unlimited = {
        "ZNDRAW_JOBLIB_LOGIN_RATE_LIMIT": "100000/minute",
        "ZNDRAW_JOBLIB_REGISTER_RATE_LIMIT": "100000/minute",
    }
    live = LiveServer(
        database_url(str(request.param), tmp), tmp / "server.log", extra_env=unlimited
    )
    live.start()
    try:
        token = live.token("fuzzer@example.com")
        admin = {"Authorization": f"Bearer {live.admin_token()}"}
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{live.url}/v1/joblib", headers=headers) as http:
            job = http.put(
                "/rooms/lab/jobs",
                json={"category": "modifiers", "name": "Fuzz", "schema": {"type": "object"}},
            ).json()
            http.post(f"/rooms/lab/tasks/{job['full_name']}", json={"payload": {}})
        yield {"url": live.url, "headers": headers, "admin_headers": admin}
    finally:
        live.stop()


def _fuzz_operations(schema: Any, base_url: str, base_headers: dict[str, str]) -> list[str]:
    """Fuzz every operation of ``schema`` alone; return the failures."""
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
            headers = dict(base_headers)
            if case.headers and any(k.lower() == "prefer" for k in case.headers):
                case.headers = {k: v for k, v in case.headers.items() if k.lower() != "prefer"}
                headers["Prefer"] = "wait=0"  # generated long-polls must not stall the run
            case.call_and_validate(
                base_url=base_url,
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
    assert operations >= 1
    return failures


def test_api_never_errors_and_matches_its_schema(fuzz_target: dict[str, Any]) -> None:
    """Every /v1/joblib operation, MAX_EXAMPLES generated requests each: no 5xx, no breach."""
    schema = schemathesis.openapi.from_url(f"{fuzz_target['url']}/openapi.json")
    schema = schema.include(path_regex="^/v1/joblib/")
    assert len(list(schema.get_all_operations())) >= 14
    failures = _fuzz_operations(schema, fuzz_target["url"], fuzz_target["headers"])
    assert not failures, "\n\n".join(failures)


def test_account_routes_never_error(fuzz_target: dict[str, Any]) -> None:
    """Every /auth and /users operation alone, as the admin: no 5xx, no schema breach."""
    schema = schemathesis.openapi.from_url(f"{fuzz_target['url']}/openapi.json")
    schema = schema.include(path_regex="^/(auth|users)/")
    assert len(list(schema.get_all_operations())) >= 8
    failures = _fuzz_operations(schema, fuzz_target["url"], fuzz_target["admin_headers"])
    assert not failures, "\n\n".join(failures)


_USER_ID = {"id": "$response.body#/id"}
_LINKS = {
    ("/auth/register", "post", "201"): {
        "ReadNewUser": {"operationId": "users_user_users__id__get", "parameters": _USER_ID},
        "ChangeNewUser": {
            "operationId": "users_patch_user_users__id__patch",
            "parameters": _USER_ID,
        },
        "DeleteNewUser": {
            "operationId": "users_delete_user_users__id__delete",
            "parameters": _USER_ID,
        },
    },
    ("/users/{id}", "patch", "200"): {
        "ReadChangedUser": {"operationId": "users_user_users__id__get", "parameters": _USER_ID},
        "DeleteChangedUser": {
            "operationId": "users_delete_user_users__id__delete",
            "parameters": _USER_ID,
        },
    },
    ("/users/{id}", "get", "200"): {
        "ChangeReadUser": {
            "operationId": "users_patch_user_users__id__patch",
            "parameters": _USER_ID,
        },
    },
}


def test_account_routes_stateful(fuzz_target: dict[str, Any]) -> None:
    """Sequences of account operations linked by the new user's id: never a 5xx."""
    raw = httpx.get(f"{fuzz_target['url']}/openapi.json").json()
    raw["paths"] = {p: v for p, v in raw["paths"].items() if p.startswith(("/auth/", "/users/"))}
    for (path, method, status), links in _LINKS.items():
        raw["paths"][path][method]["responses"][status]["links"] = links
    schema = schemathesis.openapi.from_dict(raw)
    schema.config.update(base_url=fuzz_target["url"], headers=fuzz_target["admin_headers"])
    machine = schema.as_state_machine()

    examples = max(5, MAX_EXAMPLES // 2)
    seen = {"sequences": 0}
    breaches: list[str] = []

    class Accounts(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            seen["sequences"] += 1

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            try:
                case.validate_response(
                    response,
                    excluded_checks=[positive_data_acceptance, negative_data_rejection],
                    transport_kwargs=kwargs or None,
                    recorder=self.recorder,
                )
            except Exception as exc:  # kept: Hypothesis may report it as flaky instead
                breaches.append(f"{case.operation.label}: {exc}"[:3000])
                raise

    run = settings(
        max_examples=examples,
        stateful_step_count=6,
        # answers depend on the server's state, so a replay may draw differently: generate
        # only (no shrinking or replays), as schemathesis' own runner does
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    # Which rules are enabled depends on what the server answered before (a user registered
    # in one sequence makes the same registration fail in the next), so Hypothesis may find
    # a sequence's draws inconsistent with an earlier one's and stop. Like schemathesis' own
    # runner, go on in a fresh session until enough sequences ran; every breach is kept
    # above, so one Hypothesis reports as flaky still fails the test.
    for _ in range(_FRESH_SESSIONS):
        with contextlib.suppress(FlakyStrategyDefinition):
            run_state_machine_as_test(Accounts, settings=run)
        if breaches or seen["sequences"] >= examples:
            break
    assert not breaches, "\n\n".join(breaches)
    assert seen["sequences"] >= examples
