"""The reward registry: `reward(name)` registers a function usable in recipes."""
from __future__ import annotations

from typing import Callable, TypeVar

from grpokit.registry import Registry

F = TypeVar("F", bound=Callable)

REWARDS: Registry = Registry("reward")


def reward(name: str, doc: str | None = None) -> Callable[[F], F]:
    """Decorator: register a reward function under `name` (usable in recipes)."""
    return REWARDS.register(name, doc)
