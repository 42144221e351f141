"""Pure tensor math: masking and aggregation, advantages, losses.

Imports torch, grpokit.types and grpokit.registry only; no config, no model code.
"""
from grpokit.algo.advantages import ADVANTAGES, SCALES, group_advantages, group_stats, rloo_advantages
from grpokit.algo.losses import (
    KL_ESTIMATORS,
    LOG_RATIO_CLAMP,
    LOSSES,
    RATIO_LEVELS,
    clipped_surrogate,
    entropy_from_logits,
    importance_ratio,
    kl_penalty,
    policy_loss,
    token_logprobs,
)
from grpokit.algo.masking import AGG_MODES, aggregate, masked_mean, masked_sum, masked_var

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "KL_ESTIMATORS",
    "LOG_RATIO_CLAMP",
    "LOSSES",
    "RATIO_LEVELS",
    "SCALES",
    "aggregate",
    "clipped_surrogate",
    "entropy_from_logits",
    "group_advantages",
    "group_stats",
    "importance_ratio",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "policy_loss",
    "rloo_advantages",
    "token_logprobs",
]
