"""Phase 3: rewards [N] and group ids [N] -> one advantage per completion [N].

Groups are explicit ids (never a reshape): any integers, in any order, of unequal
sizes. All statistics are vectorised with index_add_ over the groups.
Every entry of `ADVANTAGES` has the signature fn(rewards, group_ids, *, scale, eps).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from grpokit.registry import Registry

__all__ = ["ADVANTAGES", "SCALES", "group_advantages", "group_moments", "group_stats", "rloo_advantages"]

SCALES: tuple[str, ...] = ("group", "batch", "none")


def _check(values: Tensor, group_ids: Tensor) -> None:
    if values.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(values.shape)}")
    if group_ids.shape != values.shape:
        raise ValueError(
            f"group_ids must have the rewards' shape {tuple(values.shape)}, got {tuple(group_ids.shape)}"
        )
    if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be integers, got dtype {group_ids.dtype}")


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(x) for x >= 0 with a finite (zero) gradient at x == 0."""
    pos = x > 0  # [...] bool
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, leaving num unchanged where den == 0 (a centred value, 0 in a constant group)."""
    return num / torch.where(den != 0, den, torch.ones_like(den))


def group_moments(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per group: (inverse [N] in [0, G), count_g [G], mean_g [G], sum of squared
    deviations SS_g [G]); a constant group's mean is exactly its value (see `group_stats`)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)  # [N] long in [0, G)
    g = int(inverse.max()) + 1 if inverse.numel() else 0
    zeros = values.new_zeros(g)  # [G]
    count_g = zeros.index_add(0, inverse, torch.ones_like(values))  # [G]
    mean_g = zeros.index_add(0, inverse, values) / count_g  # [G]
    lo_g = torch.full_like(zeros, torch.inf).scatter_reduce(0, inverse, values, "amin")  # [G]
    hi_g = torch.full_like(zeros, -torch.inf).scatter_reduce(0, inverse, values, "amax")  # [G]
    mean_g = torch.where(lo_g == hi_g, lo_g, mean_g)  # [G]
    ss_g = zeros.index_add(0, inverse, (values - mean_g[inverse]).pow(2))  # [G]
    return inverse, count_g, mean_g, ss_g


def group_stats(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, std and size of each element's group, broadcast back to the elements.

    mean_g = sum_{j in g} v_j / n_g
    std_g  = sqrt( sum_{j in g} (v_j - mean_g)^2 / (n_g - 1) )   (unbiased, like torch.std)
             0 when n_g == 1
    Returns (mean [N], std [N], count [N]); count has the values' dtype.
    Ids are arbitrary integers (e.g. [7, 3, 7, 3]); two passes (mean, then squared
    deviations) keep the variance accurate when rewards are large. A constant group's
    mean is its value exactly: summing then dividing rounds (eight rewards of 0.1 in
    float32 average to 0.1 - 7.5e-9), and that rounding, divided by std + eps, gave
    every member an advantage of -7.5e-5 instead of 0, so the update trained rows that
    carry no signal.
    """
    _check(values, group_ids)
    inverse, count_g, mean_g, sq_dev_g = group_moments(values, group_ids)  # [N], [G], [G], [G]
    dof_g = count_g - 1  # [G]
    var_g = torch.where(dof_g > 0, sq_dev_g / dof_g.clamp_min(1), torch.zeros_like(sq_dev_g))  # [G]
    std = _safe_sqrt(var_g)[inverse]  # [N]
    return mean_g[inverse], std, count_g[inverse]


def _batch_std(values: Tensor) -> Tensor:
    """Unbiased std of all values; 0 for fewer than two."""
    if values.numel() < 2:
        return values.new_zeros(())
    centred = values - values.mean()  # [N]
    return _safe_sqrt(centred.pow(2).sum() / (values.numel() - 1))  # []


def _scaled(centred: Tensor, rewards: Tensor, group_std: Tensor, scale: str, eps: float) -> Tensor:
    """Divide centred advantages by the chosen spread (+ eps), or by nothing."""
    if scale == "none":
        return centred
    if scale == "group":
        return _safe_div(centred, group_std + eps)  # [N]
    if scale == "batch":
        return _safe_div(centred, _batch_std(rewards) + eps)  # [N]
    raise ValueError(f"unknown advantage scale {scale!r}; valid scales: {', '.join(SCALES)}")


def group_advantages(
    rewards: Tensor, group_ids: Tensor, *, scale: str = "group", eps: float = 1e-4
) -> Tensor:
    """Group-relative advantage (GRPO: DeepSeekMath, Shao et al. 2024, sec. 4.1.2,
    outcome supervision).

        A_i = (r_i - mean_{j in g(i)} r_j) / (std_{j in g(i)} r_j + eps)

    scale: "group" divides by the group's unbiased std (GRPO), "batch" by the std of
    all rewards in the batch, "none" by nothing: A_i = r_i - mean_g (Dr. GRPO, Liu et
    al. 2025, "Understanding R1-Zero-Like Training", which drops the std to remove the
    question-difficulty bias). A group of one gets 0. If eps is 0 and a group is
    constant, the centred value (0) is returned instead of NaN.
    """
    # rewards: [N] float, group_ids: [N] long
    mean, std, _ = group_stats(rewards, group_ids)  # [N], [N], [N]
    centred = rewards - mean  # [N]
    return _scaled(centred, rewards, std, scale, eps)  # [N]


def rloo_advantages(
    rewards: Tensor, group_ids: Tensor, *, scale: str = "none", eps: float = 1e-4
) -> Tensor:
    """REINFORCE Leave-One-Out advantage (Ahmadian et al. 2024, "Back to Basics:
    Revisiting REINFORCE Style Optimization for Learning from Human Feedback"; the
    baseline of Kool et al. 2019).

        A_i = r_i - 1/(n_g - 1) * sum_{j in g(i), j != i} r_j
            = n_g / (n_g - 1) * (r_i - mean_g)

    A group of one has no other member and gets 0. scale as in `group_advantages`
    ("none" by default, as in the paper): "group" divides by the group's std + eps,
    "batch" by the batch std + eps.
    """
    # rewards: [N] float, group_ids: [N] long
    mean, std, count = group_stats(rewards, group_ids)  # [N], [N], [N]
    factor = torch.where(count > 1, count / (count - 1).clamp_min(1), torch.zeros_like(count))  # [N]
    centred = factor * (rewards - mean)  # [N]
    return _scaled(centred, rewards, std, scale, eps)  # [N]


ADVANTAGES: Registry[Callable[..., Tensor]] = Registry("advantage")
ADVANTAGES.add("grpo", group_advantages, doc="group mean baseline, optional std scaling (GRPO, Dr. GRPO)")
ADVANTAGES.add("rloo", rloo_advantages, doc="leave-one-out mean baseline (RLOO, Ahmadian et al. 2024)")
