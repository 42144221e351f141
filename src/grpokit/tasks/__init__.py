"""Built-in tasks: a data generator (or loader), its default rewards, and cold-start traces.

A data spec `task:NAME` (or `task:NAME:split`) in a recipe resolves here.
"""
from __future__ import annotations

from grpokit.tasks.base import TASKS, Task


def get_task(name: str) -> Task:
    load_builtins()
    factory = TASKS.get(name)
    return factory()


def load_builtins() -> None:
    # Imported lazily so `grpokit --help` stays fast.
    from grpokit.tasks import arithmetic, gsm8k, mixture, search_qa, short_arithmetic  # noqa: F401


def with_task_corpora(specs: list) -> list:
    """Tool specs with each `corpus: task:NAME` kwarg replaced by that task's passages:
    tools know no task, so the task builds the corpus a tool is given."""
    out = []
    for spec in specs:
        kwargs = spec.get("kwargs") if isinstance(spec, dict) else None
        corpus = (kwargs or {}).get("corpus")
        if isinstance(corpus, str) and corpus.startswith("task:"):
            task = get_task(corpus.split(":")[1])
            if not hasattr(task, "corpus"):
                raise ValueError(f"search corpus {corpus!r}: task {task.name!r} has no corpus")
            spec = {**spec, "kwargs": {**kwargs, "corpus": task.corpus()}}
        out.append(spec)
    return out
