"""Built-in tasks: a data generator (or loader), its default rewards, and cold-start traces.

A data spec `task:NAME` (or `task:NAME:split`) in a recipe resolves here.
"""
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


def get_task(name: str) -> Task:
    _load_builtins()
    factory = TASKS.get(name)
    return factory()


def _load_builtins() -> None:
    # Imported lazily so `grpokit --help` stays fast.
    from grpokit.tasks import arithmetic, gsm8k, search_qa, short_arithmetic  # noqa: F401
