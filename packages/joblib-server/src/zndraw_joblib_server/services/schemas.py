"""Job schemas: what a registration may hold, and compiling one into a validator.

A job schema is data from a client, and validating payloads against it runs on the server,
so a schema must not make the server fetch anything or work without bound: references must be
local (``#...``), the schema's nesting, size and enums are limited, ``pattern`` and
``patternProperties`` use a linear-time regex engine, and a reference may not be unresolvable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jsonschema_rs

from zndraw_joblib_core import InvalidSchema
from zndraw_joblib_server.settings import JobLibSettings

__all__ = ["SchemaInfo", "compile_schema", "inspect_schema"]

_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
_KNOWN_DIALECT = re.compile(
    r"https?://json-schema\.org/(draft-0[467]|draft/2019-09|draft/2020-12)/schema#?"
)
"""The ``$schema`` URIs of the drafts the server knows (matched whole)."""
# Compiled patterns are small; the caps keep a hostile pattern's automaton small as well.
_REGEX = jsonschema_rs.RegexOptions(size_limit=1 << 20, dfa_size_limit=1 << 21)


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """What validating against a schema may cost.

    Attributes:
        nodes: JSON values in the schema document.
        expanded: JSON values with every reference written out; None when a reference is
            recursive (or cannot be followed statically), so the cost has no static bound.
    """

    nodes: int
    expanded: int | None


def _check_node(node: dict[str, Any], where: str, settings: JobLibSettings) -> None:
    for key in _REF_KEYS:
        ref = node.get(key)
        if isinstance(ref, str) and not ref.startswith("#"):
            raise InvalidSchema(
                f"The schema's {key} {ref[:200]!r} at {where or '/'} is not local: only "
                "references into the schema itself ('#...') are allowed."
            )
    dialect = node.get("$schema")
    if isinstance(dialect, str) and _KNOWN_DIALECT.fullmatch(dialect) is None:
        raise InvalidSchema(
            f"The schema's $schema {dialect[:200]!r} is not a JSON Schema draft the server "
            "knows (draft 4, 6, 7, 2019-09 or 2020-12)."
        )
    enum = node.get("enum")
    if isinstance(enum, list) and len(enum) > settings.schema_max_enum:
        raise InvalidSchema(
            f"The enum at {where or '/'} lists {len(enum)} values; at most "
            f"{settings.schema_max_enum} are allowed."
        )


def _walk(schema: Any, settings: JobLibSettings) -> tuple[int, bool]:
    """Check every node; the number of JSON values and whether a nested ``$id`` is present."""
    nodes = 0
    nested_id = False
    stack: list[tuple[Any, int, str]] = [(schema, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        nodes += 1
        if nodes > settings.schema_max_nodes:
            raise InvalidSchema(
                f"The schema has more than {settings.schema_max_nodes} JSON values."
            )
        if not isinstance(value, dict | list):
            continue
        if depth > settings.schema_max_depth:
            raise InvalidSchema(
                f"The schema nests deeper than {settings.schema_max_depth} levels (at "
                f"{where[:200]})."
            )
        if isinstance(value, dict):
            _check_node(value, where, settings)
            nested_id = nested_id or (depth > 1 and isinstance(value.get("$id"), str))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        stack.extend((v, depth + 1, f"{where}/{k}") for k, v in items)
    return nodes, nested_id


def _resolve(root: Any, ref: str) -> Any:
    """The node a local JSON-pointer reference names; None when it names none."""
    pointer = unquote(ref[1:])
    if pointer and not pointer.startswith("/"):
        return None  # an anchor: not followed statically
    node = root
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def _expanded(root: Any) -> int | None:
    """JSON values with references written out; None for recursive or opaque references."""
    memo: dict[int, int] = {}
    active: set[int] = set()
    # (node, None): to expand; (node, its linked nodes): expanded, to be summed up.
    stack: list[tuple[Any, list[Any] | None]] = [(root, None)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done is not None:
            active.discard(key)
            memo[key] = 1 + sum(memo.get(id(c), 1) for c in done)
            continue
        if key in memo:
            continue
        linked = _linked(node, root)
        if linked is None:
            return None
        active.add(key)
        stack.append((node, linked))
        for child in linked:
            if isinstance(child, dict | list) and id(child) not in memo:
                if id(child) in active:
                    return None  # a cycle through a reference
                stack.append((child, None))
    return memo[id(root)]


def _linked(node: Any, root: Any) -> list[Any] | None:
    """A node's children plus its reference's target; None when a reference is opaque."""
    if not isinstance(node, dict):
        return node if isinstance(node, list) else []
    if isinstance(node.get("$dynamicRef"), str) or isinstance(node.get("$recursiveRef"), str):
        return None
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return list(node.values())
    target = _resolve(root, ref)
    return None if target is None else [*node.values(), target]


def inspect_schema(schema: dict[str, Any], settings: JobLibSettings) -> SchemaInfo:
    """Check a schema against the limits and measure it (no network, no files, no recursion).

    Raises:
        InvalidSchema: A non-local reference, an unknown ``$schema``, or a limit exceeded.
    """
    nodes, nested_id = _walk(schema, settings)
    expanded = None if nested_id else _expanded(schema)
    if expanded is not None and expanded > settings.schema_max_expanded_nodes:
        raise InvalidSchema(
            f"The schema's references expand it to {expanded} JSON values; at most "
            f"{settings.schema_max_expanded_nodes} are allowed."
        )
    return SchemaInfo(nodes=nodes, expanded=expanded)


def compile_schema(schema: dict[str, Any]) -> Any:
    """A validator for a schema that passed :func:`inspect_schema`.

    References are resolved offline (an unresolvable one is refused, nothing is fetched),
    formats are annotations only, and patterns use the linear-time ``regex`` engine.

    Raises:
        InvalidSchema: The schema is not a valid JSON Schema, or cannot be compiled.
    """
    try:
        validator = jsonschema_rs.validator_for(
            schema, offline=True, validate_formats=False, pattern_options=_REGEX
        )
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        where = "/" + "/".join(str(p) for p in exc.instance_path)
        raise InvalidSchema(
            f"The schema is not a valid JSON Schema: {_first_line(exc.message)} (at {where})."
        ) from None
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        raise InvalidSchema(f"The schema cannot be used: {_first_line(str(exc))}") from None
    return validator


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else "invalid"
