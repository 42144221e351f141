"""torch-facing calls of grpokit's C decode kernels (float32, CPU, contiguous tensors).

Each takes the library from `grpokit.engine.native.library()` so that callers decide once
whether the kernels are in use.
"""
from __future__ import annotations

import torch

from grpokit.engine.native import LANES


def rms_norm(lib, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2, -1) + eps), as transformers' float32 RMSNorm."""
    x = x.contiguous()
    out = torch.empty_like(x)
    n = x.shape[-1]
    lib.gk_rms_norm(x.data_ptr(), weight.data_ptr(), out.data_ptr(), x.numel() // n, n, eps)
    return out


def decode_attention(lib, qkv: torch.Tensor, *, heads: int, kv_heads: int, head_dim: int, cos: torch.Tensor,
                     sin: torch.Tensor, pos: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     column: int, valid: torch.Tensor, scale: float, threads: int | None = None) -> torch.Tensor:
    """Attention of one new token per row over its KV cache.

    qkv [B, 1, (heads + 2 kv_heads) head_dim]: the token's projections (q, k, v heads);
    cos, sin [positions, head_dim]: rotary tables, row b uses position pos[b] ([B] int64);
    k_cache [B, kv_heads, columns, head_dim]: a transposed view of a contiguous
    [B, kv_heads, head_dim, columns] tensor; v_cache [B, kv_heads, columns, head_dim],
    contiguous. The rotated k and the v of this token are written at `column`.
    valid [B, columns] bool: the columns each row attends to, read up to `column`.
    Large batches are split between two threads when `threads` (default: torch's
    intra-op thread count) allows. Returns [B, 1, heads * head_dim].
    """
    b = qkv.shape[0]
    # The kernel reads raw memory: a wrong layout would give wrong numbers, not an error.
    if not (qkv.is_contiguous() and k_cache.transpose(2, 3).is_contiguous() and v_cache.is_contiguous()
            and valid.is_contiguous() and pos.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()):
        raise ValueError("decode_attention: qkv, pos, tables, masks and caches must be contiguous "
                         "(the key cache as [B, kv_heads, head_dim, columns])")
    if pos.dtype != torch.int64 or valid.dtype != torch.bool or k_cache.shape[2] % LANES or head_dim % LANES:
        raise ValueError(f"decode_attention: pos must be int64, valid bool, and the cache columns and head dim "
                         f"multiples of {LANES}")
    out = torch.empty(b, 1, heads * head_dim, dtype=qkv.dtype)
    rc = lib.gk_decode_attention(qkv.data_ptr(), b, heads, kv_heads, head_dim, cos.data_ptr(), sin.data_ptr(),
                                 pos.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), k_cache.shape[2], column,
                                 valid.data_ptr(), scale, out.data_ptr(),
                                 torch.get_num_threads() if threads is None else threads)
    if rc != 0:
        raise MemoryError("decode_attention: no scratch memory for the attention scores")
    return out
