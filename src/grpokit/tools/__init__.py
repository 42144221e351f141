"""Tools a model may call in the middle of a rollout: one protocol, one registry.

Protocol (grpokit.types.Tool): an object with

    name: str          the tag the model writes: <name>query</name>
    description: str   one line, shown by `grpokit list tools`
    __call__(query: str) -> str    the text inserted as <result>...</result>

A tool that cannot answer raises `ToolError(message)`; the message becomes the result
the model sees and the call is counted as a failure (so are other exceptions, whose
type and message are shown). Optional attribute `max_query_chars` (default 1000): a
longer query is refused with an error result instead of being run.

Registering a tool (usable in recipes as `rollout.tools: [{name: lookup, kwargs: {...}}]`):

    from grpokit.tools import tool

    @tool("lookup")
    class Lookup:
        "Look a word up in a dictionary."
        description = "look a word up"
        def __init__(self, *, path: str, name: str = "lookup"):
            self.name, self.table = name, load(path)
        def __call__(self, query: str) -> str:
            if query not in self.table:
                raise ToolError(f"no entry for {query!r}")
            return self.table[query]

Entries of the registry are factories (a class or a function) called with the spec's
kwargs. Built in: `search` (BM25 over a local JSONL corpus), `python` (a sandboxed
interpreter), `calculator` (arithmetic without eval).
"""
from __future__ import annotations

from typing import Any, Sequence

from grpokit.tools.base import DEFAULT_MAX_QUERY_CHARS, TOOLS, ToolError, tool
from grpokit.types import Tool


def build_tool(spec: Any) -> Tool:
    """A tool from a spec: a registered name, `module:factory`, {name, kwargs} or
    (name, kwargs); an object that already has `name` and `__call__` is returned as is."""
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict):
        unknown = sorted(set(spec) - {"name", "kwargs"})
        if "name" not in spec or unknown:
            raise ValueError(f"tool spec {spec!r}: expected keys name and kwargs")
        name, kwargs = spec["name"], dict(spec.get("kwargs") or {})
    elif isinstance(spec, (tuple, list)) and len(spec) in (1, 2):
        name, kwargs = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    elif callable(spec) and hasattr(spec, "name"):
        return spec
    else:
        raise TypeError(f"tool spec {spec!r}: expected a name, {{name, kwargs}} or a tool object")
    factory = TOOLS.resolve(name)
    try:
        obj = factory(**kwargs)
    except TypeError as e:
        raise TypeError(f"tool {name!r}: {e}") from None
    for attr in ("name", "description"):
        if not isinstance(getattr(obj, attr, None), str):
            raise TypeError(f"tool {name!r} has no string attribute {attr!r} (see grpokit.tools for the protocol)")
    if not callable(obj):
        raise TypeError(f"tool {name!r} is not callable")
    return obj


def build_tools(specs: Sequence[Any]) -> list[Tool]:
    """Tools from specs; two tools may not share a name (the name is the tag)."""
    tools = [build_tool(s) for s in specs]
    names = [t.name for t in tools]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two tools are named {', '.join(map(repr, dup))}; give one of them another "
                         "name (kwargs: {name: ...})")
    bad = [n for n in names if not n.replace("_", "").isalnum()]
    if bad:
        raise ValueError(f"tool names must be letters, digits or _ (they become tags): {bad}")
    return tools


# Built-in tools register themselves on import (heavy imports stay inside them).
from grpokit.tools import calculator, sandbox, search  # noqa: E402,F401

__all__ = ["TOOLS", "Tool", "ToolError", "tool", "build_tool", "build_tools", "DEFAULT_MAX_QUERY_CHARS"]
