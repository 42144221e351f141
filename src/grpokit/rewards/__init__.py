"""Rule-based rewards: plain functions from a completion (+ the example's fields) to a
score, and `RewardSet`, which combines weighted rewards over a batch.

Writing a reward:

    from grpokit.rewards import reward

    @reward("short")
    def short(completion, *, max_chars=200, **_):
        return 1.0 if len(completion) <= max_chars else 0.0

A reward receives the completion text first, then keywords: every column of the example
(answer, steps, ...), `prompt`, `completion_ids` and the recipe's kwargs, each only if
it declares it (or takes **kwargs). It returns a float/bool, a RewardOutput (score plus
logged parts), or None ("does not apply"). Functions written for TRL's GRPOTrainer
(first parameters `prompts, completions`) work unchanged. See manager.py.
"""
from __future__ import annotations

from grpokit.rewards.base import REWARDS, reward

# The builtin rewards register themselves on import (into base.REWARDS).
from grpokit.rewards import format, length, math, qa, steps  # noqa: F401
from grpokit.rewards.manager import RewardError, RewardScores, RewardSet

__all__ = ["REWARDS", "reward", "RewardSet", "RewardScores", "RewardError"]
