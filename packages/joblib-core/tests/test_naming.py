"""Naming rules of wire-v1.md plus the stricter rules of this project.

wire-v1.md: room ids are non-empty and contain neither ``@`` nor ``:`` except the reserved
``@global``. Ours on top: no ``/``, no control characters, no surrounding white space and
bounded lengths (room 255, category 64, name 255); categories and names contain neither
``:`` nor ``/`` nor control characters.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from zndraw_joblib_core import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    MAX_CATEGORY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_ROOM_ID_LENGTH,
    JobName,
    build_job_name,
    is_valid_job_part,
    is_valid_room_id,
    parse_job_name,
    visible_rooms,
)


def test_constants() -> None:
    assert GLOBAL_ROOM == "@global"
    assert MAX_ROOM_ID_LENGTH == 255
    assert MAX_CATEGORY_LENGTH == 64
    assert MAX_NAME_LENGTH == 255


# --- room ids ---------------------------------------------------------------------------

VALID_ROOMS = [
    "@global",
    "@internal",
    "a",
    "room-1",
    "room_1.2",
    "my room",  # inner white space is fine
    "Räume-ü-日本",
    "0",
    "x" * 255,
    "c8b4d0a4-7f1e-4b59-9a43-26b5e6c2f0b1",
    "#hash?query=&x",
]

INVALID_ROOMS = [
    "",
    "@",
    "@Global",
    "@global ",
    " @global",
    "@globals",
    "global@",
    "a@b",
    "a:b",
    ":",
    "room:modifiers",
    "a/b",
    "/",
    " a",
    "a ",
    "\ta",
    "a\n",
    " ",
    "a\x00b",
    "a\x1fb",
    "a\x7fb",
    "a\x85b",  # C1 control (NEL)
    "a\x9fb",
    "x" * 256,
]


@pytest.mark.parametrize("room_id", VALID_ROOMS)
def test_valid_room_ids(room_id: str) -> None:
    assert is_valid_room_id(room_id)


@pytest.mark.parametrize("room_id", INVALID_ROOMS)
def test_invalid_room_ids(room_id: str) -> None:
    assert not is_valid_room_id(room_id)


@given(st.text(min_size=1, max_size=300))
@example("a@b")
@example("@global")
@example("a\u0085")
def test_valid_room_ids_obey_every_rule(room_id: str) -> None:
    if not is_valid_room_id(room_id):
        return
    if room_id in (GLOBAL_ROOM, INTERNAL_ROOM):
        return
    assert 0 < len(room_id) <= MAX_ROOM_ID_LENGTH
    assert "@" not in room_id
    assert ":" not in room_id
    assert "/" not in room_id
    assert room_id.strip() == room_id
    assert not any(unicodedata.category(ch) == "Cc" for ch in room_id)


@given(st.characters(categories=["Cc"]))
def test_every_control_character_is_refused(ch: str) -> None:
    assert not is_valid_room_id(f"a{ch}b")
    assert not is_valid_job_part(f"a{ch}b")
    assert not is_valid_job_part(f"a{ch}b", MAX_CATEGORY_LENGTH)


@pytest.mark.parametrize("ch", ["@", ":", "/"])
@given(prefix=st.text(max_size=20), suffix=st.text(max_size=20))
def test_forbidden_character_anywhere_in_room(ch: str, prefix: str, suffix: str) -> None:
    assert not is_valid_room_id(prefix + ch + suffix)


# --- categories and names ----------------------------------------------------------------

VALID_PARTS = ["modifiers", "Rotate", "my job", "job-1.2_x", "@name", "ünïcode", "x" * 64]
INVALID_PARTS = ["", " ", " a", "a ", "a:b", ":", "a/b", "a\nb", "a\x00", "a\x7f", "a\u0080b"]


@pytest.mark.parametrize("part", VALID_PARTS)
def test_valid_parts(part: str) -> None:
    assert is_valid_job_part(part)
    assert is_valid_job_part(part, MAX_CATEGORY_LENGTH)


@pytest.mark.parametrize("part", INVALID_PARTS)
def test_invalid_parts(part: str) -> None:
    assert not is_valid_job_part(part)
    assert not is_valid_job_part(part, MAX_CATEGORY_LENGTH)


def test_part_length_limits() -> None:
    assert is_valid_job_part("n" * MAX_NAME_LENGTH)
    assert not is_valid_job_part("n" * (MAX_NAME_LENGTH + 1))
    assert is_valid_job_part("c" * MAX_CATEGORY_LENGTH, MAX_CATEGORY_LENGTH)
    assert not is_valid_job_part("c" * (MAX_CATEGORY_LENGTH + 1), MAX_CATEGORY_LENGTH)
    assert is_valid_job_part("abc", 3)
    assert not is_valid_job_part("abcd", 3)


# --- full names --------------------------------------------------------------------------

_room_chars = st.characters(
    exclude_categories=["Cc", "Cs"], exclude_characters="@:/", max_codepoint=0x2FFF
)
_part_chars = st.characters(
    exclude_categories=["Cc", "Cs"], exclude_characters=":/", max_codepoint=0x2FFF
)


def _stripped(s: str) -> bool:
    return s.strip() == s


room_ids = st.one_of(
    st.just(GLOBAL_ROOM),
    st.text(_room_chars, min_size=1, max_size=MAX_ROOM_ID_LENGTH).filter(_stripped),
)
categories = st.text(_part_chars, min_size=1, max_size=MAX_CATEGORY_LENGTH).filter(_stripped)
names = st.text(_part_chars, min_size=1, max_size=MAX_NAME_LENGTH).filter(_stripped)


def test_build_job_name() -> None:
    assert build_job_name("room", "modifiers", "Rotate") == "room:modifiers:Rotate"
    assert build_job_name("@global", "analysis", "X") == "@global:analysis:X"


@pytest.mark.parametrize(
    ("full_name", "expected"),
    [
        ("room:modifiers:Rotate", JobName("room", "modifiers", "Rotate")),
        ("@global:selections:All", JobName("@global", "selections", "All")),
        ("my room:analysis:Energy plot", JobName("my room", "analysis", "Energy plot")),
        ("r:c:@at", JobName("r", "c", "@at")),
    ],
)
def test_parse_valid_names(full_name: str, expected: JobName) -> None:
    parsed = parse_job_name(full_name)
    assert parsed == expected
    assert parsed is not None
    assert parsed.room_id == expected.room_id
    assert parsed.category == expected.category
    assert parsed.name == expected.name
    assert parsed.full_name == full_name


@pytest.mark.parametrize(
    "full_name",
    [
        "",
        "room",
        "room:modifiers",
        "room:modifiers:Rotate:extra",
        "::",
        "room::Rotate",
        ":modifiers:Rotate",
        "room:modifiers:",
        "a@b:modifiers:Rotate",
        "@globalx:modifiers:Rotate",
        "room/x:modifiers:Rotate",
        "room:mod/ifiers:Rotate",
        "room:modifiers:Ro/tate",
        " room:modifiers:Rotate",
        "room:modifiers:Rotate ",
        "room: modifiers:Rotate",
        "room:modifiers:Rot\nate",
        "room:" + "c" * (MAX_CATEGORY_LENGTH + 1) + ":Rotate",
        "room:modifiers:" + "n" * (MAX_NAME_LENGTH + 1),
        "r" * (MAX_ROOM_ID_LENGTH + 1) + ":modifiers:Rotate",
    ],
)
def test_parse_invalid_names(full_name: str) -> None:
    assert parse_job_name(full_name) is None


def test_longest_valid_full_name_parses() -> None:
    room, cat, name = "r" * MAX_ROOM_ID_LENGTH, "c" * MAX_CATEGORY_LENGTH, "n" * MAX_NAME_LENGTH
    assert parse_job_name(build_job_name(room, cat, name)) == JobName(room, cat, name)


@given(room_ids, categories, names)
def test_build_then_parse_round_trips(room_id: str, category: str, name: str) -> None:
    full = build_job_name(room_id, category, name)
    parsed = parse_job_name(full)
    assert parsed == JobName(room_id, category, name)
    assert parsed is not None
    assert parsed.full_name == full
    assert full.count(":") == 2


@given(st.text(max_size=80))
@example("a:b:c")
@example("@global:x:y")
def test_parse_then_build_round_trips(full_name: str) -> None:
    parsed = parse_job_name(full_name)
    if parsed is None:
        return
    assert build_job_name(*parsed) == full_name
    assert is_valid_room_id(parsed.room_id)
    assert is_valid_job_part(parsed.category, MAX_CATEGORY_LENGTH)
    assert is_valid_job_part(parsed.name)


@given(room_ids, categories, names, st.sampled_from([" ", "\n", "/", ":x", "\x7f"]))
def test_parse_rejects_tampered_names(room_id: str, category: str, name: str, junk: str) -> None:
    assert parse_job_name(build_job_name(room_id, category, name + junk)) is None


# --- visibility --------------------------------------------------------------------------


def test_visible_rooms_of_a_room() -> None:
    assert visible_rooms("room-1") == ("room-1", "@global", "@internal")


def test_visible_rooms_of_global_and_internal() -> None:
    assert visible_rooms("@global") == ("@global",)
    assert visible_rooms("@internal") == ("@internal",)


@given(room_ids)
def test_visible_rooms_always_include_own_global_and_internal(room_id: str) -> None:
    rooms = visible_rooms(room_id)
    if room_id in (GLOBAL_ROOM, INTERNAL_ROOM):  # these see only themselves
        assert rooms == (room_id,)
        return
    assert room_id in rooms
    assert GLOBAL_ROOM in rooms
    assert len(rooms) == len(set(rooms))
    assert set(rooms) == {room_id, GLOBAL_ROOM, INTERNAL_ROOM}
