"""transformers' Llama-family RMSNorm statistics, written once for the engine's Python
forms (the lean decode step's non-float32 path, the lean training norm): the same ops
in the same order, so their results equal transformers' bit for bit."""
from __future__ import annotations

import torch


def rms_normalize(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x * rsqrt(mean(x^2) + eps), rsqrt(mean(x^2) + eps)) over the last dimension, in
    x's dtype: transformers upcasts half-precision input to float32 first, and so do the
    callers; the caller then scales by the weight."""
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # [..., 1]
    return x * rstd, rstd
