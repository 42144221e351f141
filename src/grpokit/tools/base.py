"""The tool registry, the `tool(name)` decorator and ToolError (see the package docstring)."""
from __future__ import annotations

from typing import Callable, TypeVar

from grpokit.registry import Registry

F = TypeVar("F", bound=Callable)

TOOLS: Registry = Registry("tool")

DEFAULT_MAX_QUERY_CHARS = 1000


class ToolError(Exception):
    """A tool could not answer; str(error) is the result text the model sees."""


def tool(name: str, doc: str | None = None) -> Callable[[F], F]:
    """Decorator: register a tool factory (class or function returning a Tool) under `name`."""
    return TOOLS.register(name, doc)


def factory_arguments(factory: Callable) -> list[tuple[str, object]]:
    """(name, default) of each keyword a tool factory takes; default is REQUIRED for an
    argument without one (e.g. search's corpus). Used by `validate` and `list tools`."""
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: nothing to say
        return []
    return [(p.name, REQUIRED if p.default is inspect.Parameter.empty else p.default) for p in params
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
