"""Built-in tasks: a data generator (or loader), its default rewards, and cold-start traces.

A data spec `task:NAME` (or `task:NAME:split`) in a recipe resolves here. Options of the
task's class follow a `?`: `task:mixture?max_ops=3&gsm8k_share=0`, `task:mixture:test?max_ops=3`.
"""
from __future__ import annotations

import dataclasses

from grpokit.tasks.base import TASKS, Task


def get_task(name: str) -> Task:
    """A built-in task: `NAME`, or `NAME?key=value&...` with options of its class."""
    load_builtins()
    base, _, query = name.partition("?")
    factory = TASKS.get(base)
    return factory(**task_options(factory, query, name)) if query else factory()


def task_options(factory: type, query: str, spec: str) -> dict:
    """`key=value&...` as keyword arguments of a task's dataclass, each value converted to
    the type of the field's default (bools: true/false); one line naming the key otherwise."""
    fields = {f.name: f for f in dataclasses.fields(factory) if f.init and f.name != "name"}
    out: dict = {}
    for item in filter(None, query.split("&")):
        key, eq, text = item.partition("=")
        if key not in fields:
            raise ValueError(f"task {spec!r}: no option {key!r}; options: {', '.join(fields) or 'none'}")
        if not eq:
            raise ValueError(f"task {spec!r}: option {key!r} needs a value ({key}=...)")
        default = fields[key].default
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                out[key] = text.lower() == "true"
            elif default is None or default is dataclasses.MISSING:
                out[key] = text
            else:
                out[key] = type(default)(text)
        except ValueError:
            kind = {bool: "true or false", int: "an integer", float: "a number"}.get(type(default), "valid")
            raise ValueError(f"task {spec!r}: option {key}={text!r} is not {kind}") from None
    return out


def split_task_spec(spec: str) -> tuple[str, str]:
    """`task:NAME[:SPLIT][?OPTIONS]` -> (NAME[?OPTIONS], SPLIT or '')."""
    body, sep, query = spec[len("task:"):].partition("?")
    name, _, split = body.partition(":")
    return name + sep + query, split


def task_spec(name: str, split: str) -> str:
    """The inverse of split_task_spec: the options go last."""
    base, sep, query = name.partition("?")
    return f"task:{base}:{split}{sep}{query}"


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
