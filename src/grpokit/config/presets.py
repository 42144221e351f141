"""Variant presets: named sets of AlgorithmConfig values for the GRPO family.

A preset fills only the algorithm fields the user left empty (None); anything set in
the recipe or on the command line wins. The trainer never branches on the preset
name: `resolve_algorithm` turns the name into plain field values once, up front.

Sources of each value:

grpo     Shao et al. 2024, "DeepSeekMath" (sec. 4.1.2, eq. 3): group-normalised
         advantages (r - mean_g) / std_g, per-token ratio, loss averaged over each
         completion's tokens then over completions, PPO clip 0.2 on both sides.
dr_grpo  Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical
         Perspective": removes the std division (question-difficulty bias) and the
         per-completion length normalisation (length bias); the token sum is divided
         by a constant (num_sequences * max_len). Clip kept at 0.2.
dapo     Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at
         Scale": clip-higher (eps_low 0.2, eps_high 0.28) and the token-level loss
         (sum over all tokens of the batch / number of tokens); group-normalised
         advantages as in GRPO. Dynamic sampling is its own key,
         `algorithm.dynamic_sampling` (off unless set, so `dapo` runs keep their
         results); overlong reward shaping is the `length` reward.
gspo     Zheng et al. 2025, "Group Sequence Policy Optimization": sequence-level
         ratio s_i = (pi/pi_old)(y_i)^(1/|y_i|), clipped to [1 - 3e-4, 1 + 4e-4] (the
         ranges reported in the paper), group-normalised advantages, per-sequence
         mean (the GSPO-token form needs it to match the GSPO gradient).
rloo     Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style
         Optimization for Learning from Human Feedback": leave-one-out baseline, raw
         (unscaled) advantages, and the completion treated as one action, so the
         gradient is A_i * grad log pi(y_i) = A_i * sum_t grad log pi(y_t): a SUM over
         tokens. "constant" aggregation keeps that per-token weight independent of the
         completion's length (sum / (num_sequences * max_len), a fixed rescaling that
         the learning rate absorbs); "sequence_mean" would instead divide each
         completion by its own length. The paper is on-policy (one update per batch,
         mu = 1), where the ratio is 1 and clipping never acts; the PPO clip 0.2 only
         matters if mu > 1.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from grpokit.config.schema import AlgorithmConfig
from grpokit.registry import Registry

__all__ = ["PRESETS", "resolve_algorithm"]

PRESETS: Registry[dict[str, Any]] = Registry("preset")

PRESETS.add(
    "grpo",
    {"advantage": "grpo", "scale_rewards": "group", "ratio": "token", "loss_agg": "sequence_mean",
     "clip_low": 0.2, "clip_high": 0.2},
    doc="GRPO (DeepSeekMath, Shao et al. 2024): group-std advantages, per-sequence mean loss, clip 0.2",
)
PRESETS.add(
    "dr_grpo",
    {"advantage": "grpo", "scale_rewards": "none", "ratio": "token", "loss_agg": "constant",
     "clip_low": 0.2, "clip_high": 0.2},
    doc="Dr. GRPO (Liu et al. 2025): no std scaling, constant loss normaliser (no length bias)",
)
PRESETS.add(
    "dapo",
    {"advantage": "grpo", "scale_rewards": "group", "ratio": "token", "loss_agg": "token_mean",
     "clip_low": 0.2, "clip_high": 0.28},
    doc="DAPO (Yu et al. 2025): clip-higher 0.2/0.28, token-level loss mean",
)
PRESETS.add(
    "gspo",
    {"advantage": "grpo", "scale_rewards": "group", "ratio": "sequence", "loss_agg": "sequence_mean",
     "clip_low": 3e-4, "clip_high": 4e-4},
    doc="GSPO (Zheng et al. 2025): sequence-level ratio, clip 3e-4/4e-4",
)
PRESETS.add(
    "rloo",
    {"advantage": "rloo", "scale_rewards": "none", "ratio": "token", "loss_agg": "constant",
     "clip_low": 0.2, "clip_high": 0.2},
    doc="RLOO (Ahmadian et al. 2024): leave-one-out baseline, unscaled, sequence-level (token-sum) loss",
)


def resolve_algorithm(cfg: AlgorithmConfig) -> AlgorithmConfig:
    """A copy of `cfg` with every None field that the preset names filled from the preset.

    Fields the user set (not None) are kept. An unknown preset raises RegistryError
    listing the valid names.
    """
    preset = PRESETS.get(cfg.preset)
    filled = {name: value for name, value in preset.items() if getattr(cfg, name) is None}
    return dataclasses.replace(cfg, **filled)
