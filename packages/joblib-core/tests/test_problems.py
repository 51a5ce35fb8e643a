"""RFC 9457 problem types: exception -> body -> JSON -> exception gives back the same thing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

import zndraw_joblib_core as core
from zndraw_joblib_core import (
    PROBLEM_PREFIX,
    PROBLEM_TYPES,
    Forbidden,
    InvalidPayload,
    JobNotFound,
    LeaseLost,
    NotFound,
    ProblemDetail,
    ProblemError,
    TaskNotFound,
    WorkerNotFound,
    problem_from_body,
)

EXPORTED_PROBLEMS: list[type[ProblemError]] = sorted(
    (
        obj
        for name in core.__all__
        if isinstance(obj := getattr(core, name), type)
        and issubclass(obj, ProblemError)
        and obj is not ProblemError
    ),
    key=lambda cls: cls.__name__,
)

# From wire-v1.md: the known problem types and their HTTP status.
WIRE_PROBLEMS = {
    "job-not-found": 404,
    "schema-conflict": 409,
    "invalid-category": 400,
    "worker-not-found": 404,
    "task-not-found": 404,
    "invalid-task-transition": 409,
    "invalid-room-id": 400,
    "forbidden": 403,
    "lease-lost": 409,
    "invalid-payload": 422,
    "payload-too-large": 413,
}

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def _name(cls: type) -> str:
    return cls.__name__


def _all_subclasses(cls: type[ProblemError]) -> set[type[ProblemError]]:
    found: set[type[ProblemError]] = set()
    todo = [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_there_are_problem_classes() -> None:
    assert len(EXPORTED_PROBLEMS) >= len(WIRE_PROBLEMS)


@pytest.mark.parametrize(("slug", "status"), WIRE_PROBLEMS.items())
def test_wire_problem_types_exist_with_their_status(slug: str, status: int) -> None:
    uri = f"/v1/problems/{slug}"
    assert uri in PROBLEM_TYPES
    cls = PROBLEM_TYPES[uri]
    assert cls.status == status
    assert cls.slug == slug
    assert cls.type_uri() == uri


def test_prefix() -> None:
    assert PROBLEM_PREFIX == "/v1/problems/"


def test_registry_has_every_exported_problem() -> None:
    assert set(PROBLEM_TYPES.values()) == set(EXPORTED_PROBLEMS)


def test_registry_has_every_subclass_with_a_slug() -> None:
    with_slug = {cls for cls in _all_subclasses(ProblemError) if cls.slug}
    assert with_slug <= set(PROBLEM_TYPES.values())
    for cls in with_slug:
        assert PROBLEM_TYPES[cls.type_uri()] is cls


def test_registry_keys_and_slugs() -> None:
    slugs = [cls.slug for cls in PROBLEM_TYPES.values()]
    assert len(slugs) == len(set(slugs)), "two classes share a slug"
    for uri, cls in PROBLEM_TYPES.items():
        assert uri == PROBLEM_PREFIX + cls.slug
        assert KEBAB.match(cls.slug), cls.slug
        assert 400 <= cls.status <= 599
        assert cls.title


@pytest.mark.parametrize("cls", EXPORTED_PROBLEMS, ids=_name)
def test_body_fields(cls: type[ProblemError]) -> None:
    body = cls("what happened", instance="/v1/joblib/tasks/1").to_problem()
    assert body.type == PROBLEM_PREFIX + cls.slug
    assert body.title == cls.title
    assert body.status == cls.status
    assert body.detail == "what happened"
    assert body.instance == "/v1/joblib/tasks/1"


EXTRAS: list[dict[str, Any]] = [
    {},
    {"errors": [{"path": "$.angle", "message": "not a number"}]},
    {"task_id": "0b3c", "current": "running", "nested": {"a": [1, None, True]}},
]


@pytest.mark.parametrize("extras", EXTRAS)
@pytest.mark.parametrize("cls", EXPORTED_PROBLEMS, ids=_name)
def test_round_trip_through_json(cls: type[ProblemError], extras: dict[str, Any]) -> None:
    original = cls("detail text ✓", instance="/v1/joblib/x", **extras)
    wire = original.to_problem().model_dump_json(exclude_none=True)
    back = problem_from_body(json.loads(wire))
    assert type(back) is cls
    assert back.detail == "detail text ✓"
    assert back.instance == "/v1/joblib/x"
    assert back.extras == extras
    assert back.http_status == cls.status
    assert back.to_problem() == original.to_problem()


@pytest.mark.parametrize("cls", EXPORTED_PROBLEMS, ids=_name)
def test_round_trip_from_parsed_body(cls: type[ProblemError]) -> None:
    body = ProblemDetail.model_validate_json(cls("x").to_problem().model_dump_json())
    back = problem_from_body(body)
    assert type(back) is cls
    assert back.detail == "x"
    assert back.instance is None


@pytest.mark.parametrize("cls", EXPORTED_PROBLEMS, ids=_name)
def test_round_trip_without_detail(cls: type[ProblemError]) -> None:
    back = problem_from_body(cls().to_problem().model_dump(mode="json"))
    assert type(back) is cls
    assert back.detail is None
    assert str(back) == cls.title  # the message falls back to the title


def test_exception_message_and_attributes() -> None:
    exc = LeaseLost("worker w1 lost task t1", headers={"Retry-After": "1"}, task_id="t1")
    assert isinstance(exc, Exception)
    assert str(exc) == "worker w1 lost task t1"
    assert exc.headers == {"Retry-After": "1"}
    assert exc.extras == {"task_id": "t1"}
    assert "headers" not in exc.to_problem().model_dump()  # headers never go into the body
    assert exc.to_problem().model_extra == {"task_id": "t1"}


def test_client_can_catch_by_class_hierarchy() -> None:
    for cls in (JobNotFound, TaskNotFound, WorkerNotFound):
        with pytest.raises(NotFound):
            raise problem_from_body(cls("gone").to_problem())
    with pytest.raises(InvalidPayload) as info:
        raise problem_from_body(
            {
                "type": "/v1/problems/invalid-payload",
                "title": "Unprocessable Content",
                "status": 422,
                "detail": "payload does not match",
                "errors": [{"path": "$.a", "message": "required"}],
            }
        )
    assert info.value.extras["errors"] == [{"path": "$.a", "message": "required"}]


def test_not_found_subclasses_share_the_404_status() -> None:
    for cls in (JobNotFound, TaskNotFound, WorkerNotFound):
        assert issubclass(cls, NotFound)
        assert cls.status == 404
        assert cls.type_uri() != NotFound.type_uri()


# --- unknown problem types --------------------------------------------------------------

UNKNOWN_BODIES: list[dict[str, Any]] = [
    {
        "type": "https://example.com/probs/out-of-credit",
        "title": "You do not have enough credit.",
        "status": 403,
        "detail": "Your current balance is 30, but that costs 50.",
        "instance": "/account/12345/msgs/abc",
        "balance": 30,
        "accounts": ["/account/12345", "/account/67890"],
    },
    {"type": "/v1/problems/from-the-future", "title": "Teapot", "status": 418},
    {"type": "about:blank", "title": "Bad Gateway", "status": 502, "detail": "upstream"},
    {"title": "No type at all", "status": 500},
]


@pytest.mark.parametrize("body", UNKNOWN_BODIES, ids=lambda b: b["title"])
def test_unknown_types_keep_type_title_status(body: dict[str, Any]) -> None:
    exc = problem_from_body(body)
    assert isinstance(exc, ProblemError)
    assert type(exc) not in PROBLEM_TYPES.values()
    assert exc.http_status == body["status"]
    assert exc.detail == body.get("detail")
    again = exc.to_problem()
    assert again.type == body.get("type", "about:blank")
    assert again.title == body["title"]
    assert again.status == body["status"]
    assert again.detail == body.get("detail")
    assert again.instance == body.get("instance")
    # Extension members survive too.
    extras = {k: v for k, v in body.items() if k not in ProblemDetail.model_fields}
    assert exc.extras == extras
    assert json.loads(again.model_dump_json(exclude_none=True)) == {
        "type": "about:blank",
        **body,
    }


def test_known_type_with_a_different_status_is_not_forced_into_the_class() -> None:
    body = Forbidden("no").to_problem().model_dump()
    body["status"] = 401
    exc = problem_from_body(body)
    assert not isinstance(exc, Forbidden)
    assert exc.http_status == 401
    assert exc.to_problem().type == Forbidden.type_uri()


def test_problem_detail_requires_title_and_status() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        problem_from_body({"type": "/v1/problems/forbidden", "status": 403})
    with pytest.raises(ValidationError):
        problem_from_body({"type": "/v1/problems/forbidden", "title": "Forbidden"})


def test_base_class_renders_as_about_blank() -> None:
    body = ProblemError("generic").to_problem()
    assert body.type == "about:blank"
    assert body.status == 500
