"""Off-policy corrections for experience replayed from earlier steps (temporal grouping).

Pure tensor math (torch only).
"""
from __future__ import annotations

import torch
from torch import Tensor

from grpokit.algo.masking import masked_mean

__all__ = ["truncated_importance_weights"]


def truncated_importance_weights(logp_now: Tensor, logp_behaviour: Tensor, mask: Tensor, *,
                                 cap: float = 2.0) -> Tensor:
    """Per-sequence importance weight of a replayed completion, truncated at `cap`:

        w_i = min(cap, exp( mean_{t in y_i} [log pi_now(y_t) - log mu(y_t)] ))

    mu is the policy that sampled y_i some steps ago (its stored sampling log-probs),
    pi_now the policy at the start of this update. The per-token mean (a geometric mean
    of the token ratios, as in GSPO's sequence ratio) keeps long completions from
    exploding or vanishing; the cap bounds the variance (truncated IS, as in
    Retrace/V-trace, Munos et al. 2016, Espeholt et al. 2018).

    How replayed rows are trained (the decoupled PPO objective, Hilton et al. 2022,
    "Batch size-invariance for policy optimization"): the clipped surrogate uses
    pi_now as its proximal policy, r_t = pi_theta / pi_now, clipped to
    [1 - clip_low, 1 + clip_high] exactly as for fresh rows, and the replayed row's
    advantage is multiplied by w_i (a positive constant, so it can be folded into the
    advantage without changing what the clip does). Staleness is thus corrected once,
    by w_i, and the trust region stays around the current policy.

    logp_now, logp_behaviour, mask: [M, L]. Returns [M] (0 for an empty completion).
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    diff = masked_mean(logp_now - logp_behaviour, mask, dim=1)  # [M]
    has = mask.sum(dim=1) > 0  # [M]
    w = torch.exp(diff.clamp(max=torch.log(torch.tensor(float(cap))).item())).clamp(max=cap)  # [M]
    return torch.where(has, w, torch.zeros_like(w))
