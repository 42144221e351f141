"""The Task protocol and the task registry (built-in tasks register into TASKS)."""
from __future__ import annotations

from typing import Protocol

from grpokit.registry import Registry
from grpokit.types import Example, SFTExample


class Task(Protocol):
    name: str
    # (reward name, weight) pairs used when the recipe names no rewards
    default_rewards: list[tuple[str, float]]

    def prompts(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
        """Prompt rows of a split ("train" or "test"); n=None means the split's default size."""
        ...

    def traces(self, n: int, seed: int = 0) -> list[SFTExample]:
        """Supervised reasoning traces for the cold-start stage."""
        ...


TASKS: Registry = Registry("task")
