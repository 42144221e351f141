"""Sampler/trainer mismatch: the correction weight and the metrics.

When completions are sampled by another engine (vLLM) than the one that trains, the
two compute different log-probs for the same tokens under the same weights (other
kernels, other reduction orders, bf16 KV caches, ...). The update's pi_old is the
trainer's own recomputation, so the samples come from a slightly different policy mu
(the sampler) than the one the surrogate assumes. Truncated importance sampling
corrects that ("Your efficient RL framework secretly brings you off-policy RL
training", Yao et al. 2025; the TIS/MIS of verl and TRL):

    token level:    w_t = min(exp(log pi_old(y_t) - log mu(y_t)), C)
    sequence level: w_i = min(exp(sum_t [log pi_old(y_t) - log mu(y_t)]), C)   (same w for every token of y_i)

mode "truncate" caps the weight at C; mode "mask" drops what exceeds C (weight 0) and
keeps the rest at its uncapped value. The weight multiplies each token's clipped
surrogate as a constant (no gradient flows through it).

Pure tensor math (torch only). Shapes: N sequences, T token positions; `mask` [N, T] is
the loss mask (1 on generated tokens).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from grpokit.algo.masking import masked_mean

__all__ = ["LEVELS", "MODES", "LOG_RATIO_CLAMP", "effective_level", "mismatch_metrics", "mismatch_weights"]

LEVELS: tuple[str, ...] = ("token", "sequence", "off")
MODES: tuple[str, ...] = ("truncate", "mask")
LOG_RATIO_CLAMP = 20.0
"""Log-ratios are clamped to [-20, 20] before exp: a sequence's summed log-ratio can be
large, and a weight beyond e^20 is capped (or masked) anyway."""


def effective_level(level: str | None, backend: str) -> str:
    """The correction level a run uses: the configured one, or when unset, 'token' for
    a sampler other than the trainer's own code (vllm) and 'off' for grpokit's samplers,
    whose log-probs are the trainer's up to float rounding."""
    if level is not None:
        return level
    return "token" if backend == "vllm" else "off"


def _log_ratio(logp_train: Tensor, logp_sampler: Tensor, mask: Tensor) -> Tensor:
    keep = mask != 0
    d = torch.where(keep, logp_train.float() - logp_sampler.float(), torch.zeros((), device=mask.device))
    return d  # [N, T], 0 outside the mask


def mismatch_weights(logp_train: Tensor, logp_sampler: Tensor, mask: Tensor, *, level: str = "token",
                     cap: float = 2.0, mode: str = "truncate") -> Tensor:
    """Importance weight pi_old / mu per token [N, T] (see the module doc); 0 at mask-0
    positions. level 'off' gives 1 everywhere on the mask. Detached."""
    if level not in LEVELS:
        raise ValueError(f"unknown mismatch level {level!r}; valid: {', '.join(LEVELS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mismatch mode {mode!r}; valid: {', '.join(MODES)}")
    if not cap > 0:
        raise ValueError(f"mismatch cap must be > 0, got {cap}")
    with torch.no_grad():
        m = (mask != 0).float()  # [N, T]
        if level == "off":
            return m
        d = _log_ratio(logp_train, logp_sampler, mask)  # [N, T]
        if level == "sequence":
            d = d.sum(dim=1, keepdim=True).expand_as(d)  # [N, T], the sequence's log-ratio on each token
        log_w = d.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        w = torch.exp(log_w)
        if mode == "truncate":
            w = w.clamp(max=cap)
        else:
            w = torch.where(log_w > math.log(cap), torch.zeros_like(w), w)
        return w * m


def mismatch_metrics(logp_train: Tensor, logp_sampler: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """How far the sampler's log-probs are from the trainer's, over the masked tokens:

      abs_diff  mean |log pi_old(y_t) - log mu(y_t)|
      kl        KL(mu || pi_old) by the k3 estimator on tokens drawn from mu:
                mean of exp(d) - d - 1 with d = log pi_old - log mu (>= 0, 0 iff equal)
    Returns detached 0-dim tensors."""
    with torch.no_grad():
        d = _log_ratio(logp_train, logp_sampler, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [N, T]
        # expm1(d) - d is exp(d) - d - 1 without the cancellation that rounds d ~ 1e-7 to 0 in float32
        return {"abs_diff": masked_mean(d.abs(), mask), "kl": masked_mean(torch.expm1(d) - d, mask)}
