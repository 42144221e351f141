"""Phase 4 math: token log-probs, KL estimators, importance ratios, the clipped
surrogate and the full policy loss.

Shapes: N sequences (rows of the micro-batch), T token positions, V vocabulary.
`mask` [N, T] is the loss mask (1 on generated tokens, 0 on prompt, padding and tool
output). Values at mask-0 positions are replaced before any arithmetic, so they may
be anything (inf, NaN, 1e9) without touching the loss or its gradient.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from grpokit.algo.masking import aggregate, masked_mean
from grpokit.registry import Registry

__all__ = [
    "LOSSES",
    "KL_ESTIMATORS",
    "LOG_RATIO_CLAMP",
    "RATIO_LEVELS",
    "clipped_surrogate",
    "entropy_from_logits",
    "unclipped_surrogate",
    "importance_ratio",
    "kl_penalty",
    "policy_loss",
    "token_logprobs",
]

Number = Union[int, float, Tensor]

LOG_RATIO_CLAMP = 20.0
"""Log-ratios are clamped to [-20, 20] before `exp` (e^20 ~ 4.9e8, far from float32's
overflow at e^88). Real ratios never come near it; a stale or corrupt log-prob then gives
a large finite ratio (whose gradient is 0 beyond the clamp) instead of inf/NaN."""

RATIO_LEVELS: tuple[str, ...] = ("token", "sequence")

# Per-token policy losses (`algorithm.loss`). One signature:
#   fn(logp, old_logp, advantages, mask, *, clip_low, clip_high, ratio)
#     -> (token_loss [N, T], 0 at masked positions; stats: detached 0-dim tensors)
# `policy_loss` adds the KL term and aggregates (`algorithm.loss_agg`).
LOSSES: Registry = Registry("loss")


def _float(x: Tensor) -> Tensor:
    """At least float32 (bf16/fp16 logits are upcast; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _keep(x: Tensor, mask: Tensor) -> Tensor:
    """x where mask != 0, else 0: masked values never enter the arithmetic."""
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log pi(y_t) = log_softmax(logits_t / temperature)[y_t].

    logits [N, T, V] must already be aligned with tokens [N, T] (the caller shifts:
    logits at position t-1 predict token t). Use the sampling temperature so the
    log-probs match the distribution the completions came from. Computed as
    z[y] - logsumexp(z) in at least float32.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to define log-probs, got {temperature}")
    z = _float(logits) / temperature  # [N, T, V]
    picked = z.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)  # [N, T]
    return picked - torch.logsumexp(z, dim=-1)  # [N, T]


def entropy_from_logits(logits: Tensor) -> Tensor:
    """H(p) = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, over the last dim.

    -inf logits (banned tokens) have p_v = 0 and contribute 0.
    """
    z = _float(logits)  # [..., V]
    p = torch.softmax(z, dim=-1)  # [..., V]
    z_finite = torch.where(torch.isfinite(z), z, torch.zeros_like(z))  # [..., V]
    return torch.logsumexp(z, dim=-1) - (p * z_finite).sum(dim=-1)  # [...]


def _k1(log_ratio: Tensor) -> Tensor:
    return -log_ratio  # [N, T]


def _k2(log_ratio: Tensor) -> Tensor:
    return 0.5 * log_ratio.pow(2)  # [N, T]


def _k3(log_ratio: Tensor) -> Tensor:
    d = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [N, T]
    return torch.exp(d) - d - 1  # [N, T]


KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || ref) from tokens sampled from pi.

    With d = log ref(y_t) - log pi(y_t)  (Schulman, "Approximating KL Divergence", 2020):
        k1 = -d                      unbiased, high variance, can be negative
        k2 = d^2 / 2                 biased, low variance, >= 0
        k3 = exp(d) - d - 1          unbiased, low variance, >= 0 (DeepSeekMath eq. 4)
    d is clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] inside k3's exp.
    No mask here: pass clean values (`policy_loss` masks before calling).
    """
    try:
        fn = KL_ESTIMATORS[estimator]
    except KeyError:
        valid = ", ".join(KL_ESTIMATORS)
        raise ValueError(f"unknown KL estimator {estimator!r}; valid estimators: {valid}") from None
    return fn(ref_logp - logp)  # [N, T]


def importance_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor, level: str = "token") -> Tensor:
    """Importance ratio pi_theta / pi_old per token [N, T].

    token (PPO, GRPO):     r_it = exp(logp_it - old_logp_it)
    sequence (GSPO, Zheng et al. 2025, "Group Sequence Policy Optimization"):
        s_i       = exp( sum_t m_it (logp_it - old_logp_it) / sum_t m_it )
        s_it      = sg[s_i] * exp(logp_it - sg[logp_it])        (GSPO-token form)
      s_it equals s_i in value, while its gradient flows per token:
      d s_it / d logp_it = s_i. With "sequence_mean" aggregation and one advantage per
      sequence this is exactly the GSPO gradient (the 1/|y_i| comes from the mean).
    Log-ratios are clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] before exp (for the
    sequence level, the mean log-ratio). Masked positions get ratio 1 (token level) or
    s_i (sequence level); they are ignored downstream anyway.
    """
    logp = _keep(logp, mask)  # [N, T]
    log_ratio = logp - _keep(old_logp, mask)  # [N, T]
    if level == "token":
        return torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # [N, T]
    if level == "sequence":
        seq_log_ratio = masked_mean(log_ratio, mask, dim=1)  # [N]
        seq_ratio = torch.exp(seq_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # [N]
        return seq_ratio.detach().unsqueeze(1) * torch.exp(logp - logp.detach())  # [N, T]
    raise ValueError(f"unknown ratio level {level!r}; valid levels: {', '.join(RATIO_LEVELS)}")


@LOSSES.register("clip", doc="PPO clipped surrogate -min(r A, clip(r, 1-clip_low, 1+clip_high) A) "
                             "(GRPO; DAPO's clip-higher; GSPO with ratio=sequence)")
def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    ratio: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate per token (Schulman et al. 2017; GRPO, DeepSeekMath eq. 3),
    with decoupled bounds ("clip-higher", DAPO, Yu et al. 2025):

        loss_t = -min( r_t A, clip(r_t, 1 - clip_low, 1 + clip_high) A )

    advantages: [N] (one per sequence, broadcast over tokens) or [N, T]; treated as
    constants. ratio: "token" or "sequence" (GSPO), see `importance_ratio`.
    Returns (token_loss [N, T], 0 at masked positions; stats) with detached 0-dim stats:
      clip_low_frac   masked fraction of tokens with A < 0 and r < 1 - clip_low
      clip_high_frac  masked fraction of tokens with A > 0 and r > 1 + clip_high
                      (where the clipped branch is the min, so the token has no gradient)
      ratio_mean      masked mean of r
    """
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    r = importance_ratio(logp, old_logp, mask, ratio)  # [N, T]
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # [N, 1] or [N, T]
    adv = _keep(adv.to(r.dtype).expand_as(r), mask)  # [N, T]
    unclipped = r * adv  # [N, T]
    clipped = r.clamp(1 - clip_low, 1 + clip_high) * adv  # [N, T]
    token_loss = _keep(-torch.minimum(unclipped, clipped), mask)  # [N, T]
    with torch.no_grad():
        low = ((adv < 0) & (r < 1 - clip_low)).to(r.dtype)  # [N, T]
        high = ((adv > 0) & (r > 1 + clip_high)).to(r.dtype)  # [N, T]
        stats = {
            "clip_low_frac": masked_mean(low, mask),
            "clip_high_frac": masked_mean(high, mask),
            "ratio_mean": masked_mean(r, mask),
        }
    return token_loss, stats


@LOSSES.register("unclipped", doc="importance-weighted policy gradient -r A, no clipping (clip_low/high unused)")
def unclipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    ratio: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """loss_t = -r_t A: the policy gradient with importance ratio r and no trust region
    (REINFORCE-style; with mu = 1, r = 1 in value and the gradient is A * grad log pi).
    clip_low / clip_high are accepted (one signature per registry) and unused.
    Returns (token_loss [N, T], 0 at masked positions; stats: ratio_mean)."""
    r = importance_ratio(logp, old_logp, mask, ratio)  # [N, T]
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    adv = _keep(adv.to(r.dtype).expand_as(r), mask)  # [N, T]
    token_loss = _keep(-r * adv, mask)  # [N, T]
    with torch.no_grad():
        stats = {"ratio_mean": masked_mean(r, mask)}
    return token_loss, stats


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logp: Optional[Tensor] = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    ratio: str = "token",
    agg: str = "sequence_mean",
    loss: str = "clip",
    num_sequences: Optional[Number] = None,
    num_tokens: Optional[Number] = None,
    max_len: Optional[Number] = None,
) -> tuple[Tensor, dict[str, float]]:
    """The GRPO-family policy loss (DeepSeekMath eq. 3 and its variants):

        l_t = LOSSES[loss](r_t, A) + beta * KL_t(pi || ref)
              (clip: -min(r_t A, clip(r_t, 1 - clip_low, 1 + clip_high) A))
        L   = aggregate(l, mask, agg)       (see `masking.aggregate`)

    The KL term enters the loss only when beta > 0 (then ref_logp is required); when
    ref_logp is given it is always measured for the metrics. Pass the global
    num_sequences / num_tokens / max_len when this call sees one micro-batch.
    Returns (scalar loss, metrics as python floats: clip_low_frac, clip_high_frac,
    ratio_mean, and kl (masked mean) when ref_logp is given).
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} > 0 needs ref_logp (the reference model's log-probs); got None")
    token_loss, stats = LOSSES.get(loss)(
        logp, old_logp, advantages, mask, clip_low=clip_low, clip_high=clip_high, ratio=ratio
    )  # [N, T]
    metrics = {k: float(v) for k, v in stats.items()}
    if ref_logp is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and beta > 0):
            kl = kl_penalty(_keep(logp, mask), _keep(ref_logp, mask), kl_estimator)  # [N, T]
        if beta > 0:
            token_loss = token_loss + beta * _keep(kl, mask)  # [N, T]
        metrics["kl"] = float(masked_mean(kl.detach(), mask))
    total = aggregate(
        token_loss, mask, agg, num_sequences=num_sequences, num_tokens=num_tokens, max_len=max_len
    )  # []
    return total, metrics
