"""Phase 2, group formation: Experience -> a group id per completion ([N] long), or
`Groups` (ids at several scales with weights, shrinkage, rows pooled from earlier steps).

The recipe key `algorithm.grouping` names a strategy (`grpokit list groupers`) or
gives module:function (or module:Class); `algorithm.group.*` holds the strategies'
options, and `make_grouper` passes each one the options its constructor names.

    prompt       the completions of one prompt (standard GRPO; the default)
    batch        the whole step is one group
    semantic     prompts with similar contexts (k-means on context embeddings)
    adaptive     semantic clusters that split when bimodal and merge when alike
    reward       prompts of like running success rate (stateful)
    complexity   prompts of like complexity (a dataset field, or prompt length)
    temporal     a replay window of the last K steps pooled into the groups (stateful)
    multiscale   prompt in cluster in batch, per-scale advantages combined with weights

Two wrappers combine with any of them: `algorithm.group.shrink` (small groups'
baselines shrunk toward their parent's) and `algorithm.group.budget` (self-tuning
completions per prompt under a sample budget).
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from grpokit.grouping.base import Groups, accepted_kwargs, stateful
from grpokit.grouping.multiscale import MultiscaleGrouper
from grpokit.grouping.reward import ComplexityGrouper, RewardGrouper, SuccessTracker
from grpokit.grouping.selftune import Budgeted, Shrunk
from grpokit.grouping.semantic import AdaptiveGrouper, SemanticGrouper, kmeans
from grpokit.grouping.temporal import TemporalGrouper
from grpokit.registry import Registry
from grpokit.types import Experience

__all__ = [
    "GROUPERS", "AdaptiveGrouper", "Budgeted", "ComplexityGrouper", "Groups", "MultiscaleGrouper", "RewardGrouper",
    "SemanticGrouper", "Shrunk", "SuccessTracker", "TemporalGrouper", "by_batch", "by_prompt", "kmeans",
    "check_options", "make_grouper", "stateful",
]

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

GROUPERS.add("semantic", SemanticGrouper,
             doc="prompts with similar contexts: k-means (cosine) on context embeddings, every step")
GROUPERS.add("adaptive", AdaptiveGrouper,
             doc="semantic clusters that split when rewards are bimodal and merge when small or alike")
GROUPERS.add("reward", RewardGrouper, doc="prompts of like difficulty: buckets of running success rate (stateful)")
GROUPERS.add("complexity", ComplexityGrouper,
             doc="prompts of like complexity: a dataset field (e.g. number of steps) or prompt length")
GROUPERS.add("temporal", TemporalGrouper,
             doc="a replay window of the last K steps pooled into the groups, optionally trained on (stateful)")
GROUPERS.add("multiscale", MultiscaleGrouper,
             doc="prompt in cluster in batch: per-scale advantages combined with fixed or self-tuned weights")


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
