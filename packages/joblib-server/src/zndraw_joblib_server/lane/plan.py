"""Compile an endpoint's signature, and its dependencies', into a plan of plain calls.

A plan knows every input the endpoint and its dependencies read (path, query and header
parameters, one JSON body), validates them with pydantic exactly as FastAPI does, and then
calls the dependencies depth-first in signature order, each callable at most once per request
(FastAPI's default ``use_cache``). It supports only what the queue's hot endpoints use: async
functions (or objects with an async ``__call__``), ``Request`` and ``Response`` parameters,
``Depends``, ``Path``, ``Query``, ``Header`` and ``Body`` markers, and a single body
parameter. Anything else raises :class:`Unsupported`, and the route keeps FastAPI's path.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from fastapi import params
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

__all__ = ["Inputs", "Plan", "Unsupported", "compile_plan"]

_MISSING = object()


class Unsupported(Exception):
    """The signature uses something a plan cannot reproduce exactly."""


@dataclass(frozen=True, eq=False)
class _Input:
    """One validated value read from the request (hashed by identity: defaults may not be)."""

    where: str  # "path", "query", "header" or "body"
    alias: str
    adapter: TypeAdapter[Any]
    default: Any


@dataclass(eq=False)
class _Call:
    """A dependency (or the endpoint) and how to fill its parameters."""

    call: Callable[..., Any]
    # Each parameter's source: a _Call, or the key of the value (an _Input, "request" or
    # "response").
    args: dict[str, Any] = field(default_factory=dict)


class Inputs(dict[_Input, Any]):
    """The request's validated inputs, keyed by their declaration."""


@dataclass(eq=False)
class Plan:
    """An endpoint compiled to plain calls.

    Attributes:
        endpoint: The endpoint's call tree.
        inputs: Every input the tree reads, validated before anything is called.
        calls: Every dependency callable in the tree (to detect overrides).
        has_body: Whether the endpoint reads a JSON body.
    """

    endpoint: _Call
    inputs: list[_Input]
    calls: frozenset[Callable[..., Any]]
    has_body: bool

    def parse(
        self,
        path_params: Mapping[str, str],
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Inputs | None:
        """Validate every input; None when any is missing or invalid (FastAPI answers)."""
        values = Inputs()
        sources = {"path": path_params, "query": query, "header": headers}
        for item in self.inputs:
            try:
                if item.where == "body":
                    raw = json.loads(body) if body else _MISSING
                else:
                    raw = sources[item.where].get(item.alias, _MISSING)
                if raw is not _MISSING:
                    values[item] = item.adapter.validate_python(raw, from_attributes=True)
                elif item.default is not _MISSING:
                    values[item] = item.default
                else:
                    return None
            except Exception:  # malformed or too deep JSON, an invalid value: FastAPI answers
                return None
        return values

    async def run(self, request: Request, response: Response, inputs: Inputs) -> Any:
        """Call the dependencies and the endpoint; the endpoint's return value."""
        values: dict[Any, Any] = {**inputs, "request": request, "response": response}
        return await _invoke(self.endpoint, values, {})


async def _invoke(node: _Call, values: dict[Any, Any], cache: dict[int, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for name, ref in node.args.items():
        if not isinstance(ref, _Call):
            kwargs[name] = values[ref]
            continue
        key = id(ref.call)
        if key not in cache:
            cache[key] = await _invoke(ref, values, cache)
        kwargs[name] = cache[key]
    return await node.call(**kwargs)


def compile_plan(endpoint: Callable[..., Any], path_names: set[str]) -> Plan:
    """Compile ``endpoint`` (with the route's path parameter names) into a :class:`Plan`.

    Raises:
        Unsupported: The endpoint or one of its dependencies uses an unsupported feature.
    """
    compiler = _Compiler(path_names)
    root = compiler.compile(endpoint, depth=0)
    bodies = [i for i in compiler.inputs.values() if i.where == "body"]
    if len(bodies) > 1:
        raise Unsupported("more than one body parameter")
    deps = frozenset(c.call for c in compiler.calls.values() if c is not root)
    return Plan(root, list(compiler.inputs.values()), deps, bool(bodies))


def _is_async(call: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(call):
        return True
    method = getattr(call, "__call__", None)  # noqa: B004 - objects with async __call__
    return not inspect.isfunction(call) and inspect.iscoroutinefunction(method)


def _hints(call: Callable[..., Any]) -> dict[str, Any]:
    target = call if inspect.isfunction(call) else getattr(call, "__call__", call)  # noqa: B004
    try:
        return get_type_hints(target, include_extras=True)
    except Exception as exc:  # unresolvable annotations
        raise Unsupported(f"annotations of {call!r}: {exc}") from exc


@dataclass
class _Compiler:
    """The inputs and calls of one endpoint's tree, collected while it is compiled."""

    path_names: set[str]
    inputs: dict[tuple[str, str], _Input] = field(default_factory=dict)
    calls: dict[int, _Call] = field(default_factory=dict)

    def compile(self, call: Callable[..., Any], depth: int) -> _Call:
        """The call node of ``call`` (one per callable), its parameters compiled."""
        if depth > 16:
            raise Unsupported("dependencies nested too deeply")
        known = self.calls.get(id(call))
        if known is not None:
            return known
        if not _is_async(call) or inspect.isasyncgenfunction(call):
            raise Unsupported(f"{call!r} is not a plain async callable")
        node = _Call(call)
        hints = _hints(call)
        for name, param in inspect.signature(call).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise Unsupported(f"{call!r} takes *args or **kwargs")
            annotation = hints.get(name, param.annotation)
            node.args[name] = self.argument(name, annotation, param.default, depth)
        self.calls[id(call)] = node
        return node

    def argument(self, name: str, annotation: Any, default: Any, depth: int) -> Any:
        """Where the parameter ``name`` of a call at ``depth`` gets its value (see ``args``)."""
        if annotation is Request or annotation is HTTPConnection:
            return "request"
        if annotation is Response:
            return "response"
        base, meta = annotation, []
        if get_origin(annotation) is Annotated:
            base, *meta = get_args(annotation)
        if isinstance(default, params.Depends | params.Param | params.Body):
            meta, default = [*meta, default], inspect.Parameter.empty
        markers = [m for m in meta if isinstance(m, params.Depends | params.Param | params.Body)]
        if len(markers) > 1:
            raise Unsupported(f"parameter {name!r} has several markers")
        marker = markers[0] if markers else None
        if isinstance(marker, params.Depends):
            if isinstance(marker, params.Security) or not marker.use_cache:
                raise Unsupported(f"parameter {name!r}: security scopes or use_cache=False")
            if marker.dependency is None:
                raise Unsupported(f"parameter {name!r}: Depends() without a callable")
            return self.compile(marker.dependency, depth + 1)
        where = _location(name, base, marker, self.path_names)
        alias = _alias(name, marker, where)
        if default is inspect.Parameter.empty:
            default = getattr(marker, "default", PydanticUndefined)
        unset = (inspect.Parameter.empty, PydanticUndefined, ...)
        value_default = _MISSING if default in unset else default
        key = (where, alias)
        if key in self.inputs:
            raise Unsupported(f"input {key} read twice")
        item = _Input(where, alias, TypeAdapter(annotation), value_default)
        self.inputs[key] = item
        return item


def _location(name: str, base: Any, marker: Any, path_names: set[str]) -> str:
    if isinstance(marker, params.Path) or (marker is None and name in path_names):
        return "path"
    if isinstance(marker, params.Header):
        return "header"
    if isinstance(marker, params.Query):
        return "query"
    if isinstance(marker, params.Body):
        if marker.embed:
            raise Unsupported(f"parameter {name!r}: embedded body")
        return "body"
    if isinstance(marker, params.Param):
        raise Unsupported(f"parameter {name!r}: cookie or unknown location")
    origin = get_origin(base) or base
    if inspect.isclass(origin) and issubclass(origin, BaseModel | list):
        return "body"
    raise Unsupported(f"parameter {name!r}: an implicit query parameter")


def _alias(name: str, marker: Any, where: str) -> str:
    alias = getattr(marker, "alias", None)
    if alias:
        return str(alias)
    if where == "header" and getattr(marker, "convert_underscores", True):
        return name.replace("_", "-")
    return name
