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
