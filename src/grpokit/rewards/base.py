"""The reward registry: `reward(name)` registers a function usable in recipes."""
from __future__ import annotations

from typing import Callable, TypeVar

from grpokit.registry import Registry

F = TypeVar("F", bound=Callable)

REWARDS: Registry = Registry("reward")


def reward(name: str, doc: str | None = None, *, fields: dict | None = None) -> Callable[[F], F]:
    """Decorator: register a reward function under `name` (usable in recipes).

    fields: {column: (accepts(value) -> bool, "what it expects")}, the example columns
    the reward reads; RewardSet.check_examples checks every example against them when
    the data is loaded, so a column it cannot read fails then, naming the row, instead
    of scoring 0 for a whole run."""
    register = REWARDS.register(name, doc)

    def deco(fn: F) -> F:
        if fields:
            fn.reward_fields = dict(fields)  # type: ignore[attr-defined]
        return register(fn)

    return deco


def is_scalar_answer(value: object) -> bool:
    """A gold answer a text or number reward can read: str, int or float (not bool)."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)
