"""Masked reductions and loss aggregation.

Every function here treats a position whose mask is 0 as absent: its value is
never read into the result (selected away with `torch.where`, not multiplied by
0), so padding or tool tokens holding inf/NaN cannot leak into a loss or its
gradient. Masks may be bool, integer or float; a float mask acts as a per-token
weight (a 0/1 float mask is the common case).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

Number = Union[int, float, Tensor]

__all__ = ["AGG_MODES", "aggregate", "masked_mean", "masked_sum", "masked_var"]


def _prepare(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(x with masked positions replaced by 0, mask weights in x's dtype), both x-shaped."""
    x, mask = torch.broadcast_tensors(x, mask)
    keep = mask != 0  # [...] bool
    weight = mask.to(x.dtype)  # [...]
    clean = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))  # [...]
    return clean, weight


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, and 0 where den == 0 (no NaN, and no NaN gradient either)."""
    nonzero = den != 0  # [...] bool
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), torch.zeros_like(num))


def _reduce_sum(x: Tensor, dim: Optional[int], keepdim: bool) -> Tensor:
    return x.sum() if dim is None else x.sum(dim=dim, keepdim=keepdim)


def masked_sum(x: Tensor, mask: Tensor, dim: Optional[int] = None, *, keepdim: bool = False) -> Tensor:
    """sum_t m_t * x_t over `dim` (all dims when None); masked positions are never read."""
    clean, weight = _prepare(x, mask)  # [...], [...]
    return _reduce_sum(clean * weight, dim, keepdim)  # [] or reduced shape


def masked_mean(x: Tensor, mask: Tensor, dim: Optional[int] = None, *, keepdim: bool = False) -> Tensor:
    """sum_t m_t x_t / sum_t m_t over `dim`; 0 (not NaN) where the mask sums to 0."""
    clean, weight = _prepare(x, mask)  # [...], [...]
    total = _reduce_sum(clean * weight, dim, keepdim)  # reduced shape
    count = _reduce_sum(weight, dim, keepdim)  # reduced shape
    return _safe_div(total, count)


def masked_var(
    x: Tensor, mask: Tensor, dim: Optional[int] = None, *, unbiased: bool = True, keepdim: bool = False
) -> Tensor:
    """Variance of the unmasked values over `dim`.

    var = sum_t m_t (x_t - mean)^2 / (sum_t m_t - 1)   (unbiased, like torch.var)
    or    sum_t m_t (x_t - mean)^2 / sum_t m_t         (unbiased=False).
    0 where the denominator is not positive (fewer than 2 values, or none).
    """
    clean, weight = _prepare(x, mask)  # [...], [...]
    count = _reduce_sum(weight, dim, True)  # reduced shape, kept dims
    mean = _safe_div(_reduce_sum(clean * weight, dim, True), count)  # reduced shape, kept dims
    sq_dev = _reduce_sum((clean - mean).pow(2) * weight, dim, True)  # reduced shape, kept dims
    den = count - 1 if unbiased else count  # reduced shape, kept dims
    den = torch.where(den > 0, den, torch.zeros_like(den))
    var = _safe_div(sq_dev, den)  # reduced shape, kept dims
    if dim is None:
        return var.reshape(())
    return var if keepdim else var.squeeze(dim)


# --- aggregation -----------------------------------------------------------------------


def _as_normaliser(value: Optional[Number], default: Tensor, like: Tensor) -> Tensor:
    """A normaliser as a 0-dim tensor; 1 where it is 0 (the numerator is then 0 too)."""
    den = default if value is None else torch.as_tensor(value)
    den = den.to(dtype=like.dtype, device=like.device)  # []
    return torch.where(den != 0, den, torch.ones_like(den))


def _sequence_mean(loss: Tensor, weight: Tensor, n_seq: Tensor, n_tok: Tensor, t_max: Tensor) -> Tensor:
    per_seq = (loss * weight).sum(dim=1)  # [N]
    length = weight.sum(dim=1).clamp_min(1.0)  # [N]
    return (per_seq / length).sum() / n_seq  # []


def _token_mean(loss: Tensor, weight: Tensor, n_seq: Tensor, n_tok: Tensor, t_max: Tensor) -> Tensor:
    return (loss * weight).sum() / n_tok  # []


def _constant(loss: Tensor, weight: Tensor, n_seq: Tensor, n_tok: Tensor, t_max: Tensor) -> Tensor:
    return (loss * weight).sum() / (n_seq * t_max)  # []


_AGGREGATORS: dict[str, Callable[..., Tensor]] = {
    "sequence_mean": _sequence_mean,
    "token_mean": _token_mean,
    "constant": _constant,
}
AGG_MODES: tuple[str, ...] = tuple(_AGGREGATORS)


def aggregate(
    token_loss: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_sequences: Optional[Number] = None,
    num_tokens: Optional[Number] = None,
    max_len: Optional[Number] = None,
) -> Tensor:
    """Reduce a per-token loss [N, T] to a scalar.

    sequence_mean (GRPO, DeepSeekMath eq. 3):
        L = sum_i [ sum_t l_it m_it / max(1, sum_t m_it) ] / num_sequences
    token_mean (DAPO, Yu et al. 2025, "token-level policy gradient loss"):
        L = sum_it l_it m_it / num_tokens
    constant (Dr. GRPO, Liu et al. 2025: no length normalisation):
        L = sum_it l_it m_it / (num_sequences * max_len)

    The normalisers are GLOBAL: pass the whole batch's number of sequences, number of
    unmasked tokens (sum of the mask) and padded length when this call sees only a
    micro-batch, and the micro-batch losses sum to the full-batch loss (so do their
    gradients). Left as None they are this call's own N, mask.sum() and T.
    A sequence whose mask is all 0 contributes 0 but still counts in num_sequences.
    A zero normaliser (an empty batch) gives 0 rather than NaN.
    """
    try:
        reduce = _AGGREGATORS[mode]
    except KeyError:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid modes: {', '.join(AGG_MODES)}") from None
    if token_loss.dim() != 2:
        raise ValueError(f"token_loss must be [N, T], got shape {tuple(token_loss.shape)}")
    loss, weight = _prepare(token_loss, mask)  # [N, T], [N, T]
    n, t = loss.shape
    n_seq = _as_normaliser(num_sequences, torch.tensor(n), loss)  # []
    n_tok = _as_normaliser(num_tokens, weight.sum(), loss)  # []
    t_max = _as_normaliser(max_len, torch.tensor(t), loss)  # []
    return reduce(loss, weight, n_seq, n_tok, t_max)
