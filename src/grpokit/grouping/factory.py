"""The grouper registry and `make_grouper`, which builds the grouper a recipe names
(composite groupers such as multiscale and temporal build their parts with it too).
The built-in classes register in the package's __init__."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from grpokit.grouping.base import accepted_kwargs
from grpokit.grouping.selftune import Budgeted, Shrunk
from grpokit.registry import Registry
from grpokit.types import Experience

GROUPERS: Registry = Registry("grouper")


@GROUPERS.register("prompt")
def by_prompt(exp: Experience) -> Tensor:
    """Standard GRPO: the completions of one prompt form one group."""
    return exp.prompt_ids  # [N] long


by_prompt.needs_embeddings = False  # type: ignore[attr-defined]


@GROUPERS.register("batch")
def by_batch(exp: Experience) -> Tensor:
    """The whole step is one group (a batch-mean baseline, as in REINFORCE with a batch baseline)."""
    return torch.zeros_like(exp.prompt_ids)  # [N] long


by_batch.needs_embeddings = False  # type: ignore[attr-defined]

def make_grouper(spec: str = "prompt", *, shrink: bool = False, prior_dof: float = 2.0, budget: float = 0.0,
                 num_generations: int = 8, min_samples: int = 2, max_samples: int = 0, **options: Any) -> Any:
    """The grouper a recipe names, built with its options.

    spec: a registered name or module:attr. A function is used as is; a class is
    instantiated with the options its constructor accepts (the rest are ignored, so
    one `algorithm.group` section serves every strategy). Then, when asked:
    shrink -> baselines shrunk toward the parent scale (a class that takes `shrink`
    itself, like multiscale, handles it; others are wrapped in `Shrunk`);
    budget > 0 -> wrapped in `Budgeted` (self-tuning completions per prompt).
    With the defaults, make_grouper("prompt") is `by_prompt` itself.
    An unknown name raises RegistryError listing the valid ones.
    """
    obj = GROUPERS.resolve(spec)
    handles_shrink = False
    if inspect.isclass(obj):
        kw = accepted_kwargs(obj, {**options, "shrink": shrink, "prior_dof": prior_dof,
                                   "num_generations": num_generations})
        handles_shrink = "shrink" in kw
        grouper = obj(**kw)
    elif callable(obj):
        grouper = obj
    else:
        raise TypeError(f"grouper {spec!r} is a {type(obj).__name__}, not a function or class")
    if shrink and not handles_shrink:
        grouper = Shrunk(grouper, prior_dof=prior_dof)
    if budget and budget > 0:
        grouper = Budgeted(grouper, budget=budget, num_generations=num_generations, min_samples=min_samples,
                           max_samples=max_samples, **{k: options[k] for k in ("success", "decay", "field")
                                                       if k in options})
    return grouper


def check_options(spec: str, **options: Any) -> list[str]:
    """Problems building the grouper `spec` with these options (for `grpokit validate`):
    [] when it builds; else one message naming the `algorithm.group.*` key at fault."""
    from grpokit.registry import RegistryError

    try:
        make_grouper(spec, **options)
    except (ValueError, TypeError, RegistryError) as e:
        return [str(e)]
    return []
