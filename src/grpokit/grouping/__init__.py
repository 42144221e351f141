"""Phase 2, group formation: Experience -> a group id per completion ([N] long).

Every grouper has the same signature (see `grpokit.types.Grouper`); the recipe key
`algorithm.grouping` names one (`grpokit list groupers`), or gives module:function.
"""
from __future__ import annotations

from torch import Tensor

from grpokit.registry import Registry
from grpokit.types import Experience

GROUPERS: Registry = Registry("grouper")


@GROUPERS.register("prompt")
def by_prompt(exp: Experience) -> Tensor:
    """Standard GRPO: the completions of one prompt form one group."""
    return exp.prompt_ids  # [N] long
