"""The task state machine must match the transition table of wire-v1.md exactly."""

from __future__ import annotations

import itertools

import pytest

from zndraw_joblib_core import (
    ACTIVE_STATUSES,
    CLIENT_TRANSITIONS,
    TERMINAL_STATUSES,
    Category,
    TaskStatus,
    can_transition,
)

# Written out from wire-v1.md ("Transitions accepted by PATCH /tasks/{id}") as plain wire
# strings, independent of the implementation's table.
WIRE_TRANSITIONS: dict[str, set[str]] = {
    "pending": {"claimed", "cancelled"},
    "claimed": {"running", "failed", "cancelled"},
    "running": {"completed", "failed", "cancelled"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
}

ALL_PAIRS = list(itertools.product(WIRE_TRANSITIONS, repeat=2))


def test_wire_values_are_exactly_the_six_states() -> None:
    assert sorted(s.value for s in TaskStatus) == sorted(WIRE_TRANSITIONS)


@pytest.mark.parametrize("name", list(WIRE_TRANSITIONS))
def test_status_parses_from_its_wire_value(name: str) -> None:
    status = TaskStatus(name)
    assert status.value == name
    assert status == name  # a str enum compares equal to its wire value


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValueError):
        TaskStatus("done")
    with pytest.raises(ValueError):
        TaskStatus("PENDING")


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS)
def test_can_transition_matches_wire_table(current: str, target: str) -> None:
    expected = target in WIRE_TRANSITIONS[current]
    assert can_transition(TaskStatus(current), TaskStatus(target)) is expected


def test_transition_table_is_exactly_the_wire_table() -> None:
    as_strings = {
        src.value: {dst.value for dst in targets} for src, targets in CLIENT_TRANSITIONS.items()
    }
    assert as_strings == WIRE_TRANSITIONS


def test_every_status_has_an_entry() -> None:
    assert set(CLIENT_TRANSITIONS) == set(TaskStatus)


def test_allowed_transition_count() -> None:
    allowed = [pair for pair in ALL_PAIRS if can_transition(*map(TaskStatus, pair))]
    assert len(allowed) == 8


@pytest.mark.parametrize("status", list(TaskStatus))
def test_no_self_transitions(status: TaskStatus) -> None:
    assert not can_transition(status, status)


@pytest.mark.parametrize("status", list(TaskStatus))
def test_nothing_returns_to_pending(status: TaskStatus) -> None:
    assert not can_transition(status, TaskStatus.PENDING)


def test_terminal_statuses() -> None:
    assert {s.value for s in TERMINAL_STATUSES} == {"completed", "failed", "cancelled"}
    for status in TaskStatus:
        assert status.is_terminal is (status in TERMINAL_STATUSES)
        if status.is_terminal:
            assert not any(can_transition(status, t) for t in TaskStatus)
        else:
            assert any(can_transition(status, t) for t in TaskStatus)


def test_active_statuses_are_those_a_worker_holds() -> None:
    assert {s.value for s in ACTIVE_STATUSES} == {"claimed", "running"}
    assert not (ACTIVE_STATUSES & TERMINAL_STATUSES)


def test_every_non_terminal_state_can_be_cancelled() -> None:
    for status in TaskStatus:
        assert can_transition(status, TaskStatus.CANCELLED) is (not status.is_terminal)


def test_default_categories() -> None:
    assert {c.value for c in Category} == {"modifiers", "selections", "analysis"}


@pytest.mark.parametrize("status", list(TaskStatus))
def test_status_renders_as_its_wire_value(status: TaskStatus) -> None:
    # Query strings and messages are built with str()/f-strings (e.g. ``?status=...``).
    assert str(status) == status.value
    assert f"{status}" == status.value
    assert format(status) == status.value


@pytest.mark.parametrize("category", list(Category))
def test_category_renders_as_its_wire_value(category: Category) -> None:
    assert str(category) == category.value
    assert f"{category}" == category.value
