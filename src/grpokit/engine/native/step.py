"""torch-facing side of step.c: a whole one-token decode step of a Llama-family model in
one C call (float32, CPU).

`WholeStep` holds the model's weights in step.c's layout (transposed, output columns
padded to LANES, cut into panels of columns), a copy made once per generate call, and the C structs that point at
them; `caches` points it at the decoder's KV caches whenever they are replaced.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from grpokit.engine.native import LANES

_p, _f = ctypes.c_void_p, ctypes.c_float


class _Layer(ctypes.Structure):
    _fields_ = [("ln1", _p), ("ln2", _p), ("eps1", _f), ("eps2", _f), ("w_qkv", _p), ("b_qkv", _p), ("w_o", _p),
                ("b_o", _p), ("w_gu", _p), ("b_gu", _p), ("w_down", _p), ("b_down", _p), ("k_cache", _p),
                ("v_cache", _p), ("t_qkv", _p), ("t_o", _p), ("t_gu", _p), ("t_down", _p)]


class _Model(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("n_layers", "hidden", "hq", "hk", "d", "inter", "vocab", "vocab_pad",
                                               "cap")] + \
               [("layers", ctypes.POINTER(_Layer))] + \
               [(n, _p) for n in ("final_w", "head", "head_b", "cos", "sin")] + \
               [("final_eps", _f), ("scale", _f), ("t_head", _p)]


@dataclass
class LayerWeights:
    """One decoder layer's weights as nn.Linear stores them ([out, in]); biases may be None."""

    ln1: torch.Tensor
    eps1: float
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    qkv_bias: torch.Tensor | None  # q, k and v biases concatenated
    o: torch.Tensor
    o_bias: torch.Tensor | None
    ln2: torch.Tensor
    eps2: float
    gate: torch.Tensor
    up: torch.Tensor
    gate_up_bias: torch.Tensor | None  # gate and up biases concatenated
    down: torch.Tensor
    down_bias: torch.Tensor | None


# float32 weight bytes up to which the step's threads split the batch's rows, each
# streaming every weight but never waiting on another; larger models split each product's
# columns (each weight read once per step, a barrier after every op). W2's 160 MiB, 32
# rows, 2 threads: 28 ms a step by rows, 21.7 by columns (40 on one thread).
ROW_SPLIT_MAX_BYTES = 16 * 2**20


def supported(*, hidden: int, inter: int, head_dim: int, heads: int, kv_heads: int) -> bool:
    """step.c's shape requirements: hidden size, MLP width and head dim in whole blocks."""
    return hidden % LANES == 0 and inter % LANES == 0 and head_dim % LANES == 0 and heads % kv_heads == 0


def _packed(lib, weights: list[torch.Tensor], pad: int, transpose: bool) -> torch.Tensor:
    """The weights in step.c's panels (columns c .. c + width - 1 of a matrix as one
    contiguous block of its rows; the width, lib.gk_panel_width(), is the register
    tile's). transpose: the weights [out_i, in] side by side and transposed,
    [in, sum(out_i) + pad], as the forward multiplies by them; else stacked as they are,
    [sum(rows_i) + pad, in], as train.c's backward does. Padding is zeros."""
    width = weights[0].shape[1]  # in
    total = sum(w.shape[0] for w in weights) + pad
    out = (torch.zeros if pad else torch.empty)(total * width, dtype=torch.float32)
    pack = lib.gk_pack_panels if transpose else lib.gk_pack_rows
    at = 0
    for w in weights:
        w = w.detach().float().contiguous()
        pack(w.data_ptr(), w.shape[0], width, out.data_ptr(), total, at)
        at += w.shape[0]
    return out


def _panels(lib, weights: list[torch.Tensor], pad: int = 0) -> torch.Tensor:
    return _packed(lib, weights, pad, transpose=True)


def _row_panels(lib, weights: list[torch.Tensor], pad: int = 0) -> torch.Tensor:
    return _packed(lib, weights, pad, transpose=False)


class WholeStep:
    """Weights and structs for gk_decode_step; call it with a batch's tokens and positions."""

    def __init__(self, lib, layers: list[LayerWeights], *, embed: torch.nn.Module, final_w: torch.Tensor,
                 final_eps: float, head: torch.Tensor, head_bias: torch.Tensor | None, cos: torch.Tensor,
                 sin: torch.Tensor, heads: int, kv_heads: int, head_dim: int, scale: float,
                 backward: bool = False):
        """backward: also keep the untransposed panels train.c's backward multiplies by."""
        hidden, inter = layers[0].q.shape[1], layers[0].gate.shape[0]
        if not supported(hidden=hidden, inter=inter, head_dim=head_dim, heads=heads, kv_heads=kv_heads):
            raise ValueError(f"WholeStep: hidden {hidden}, MLP width {inter} and head dim {head_dim} must be "
                             f"multiples of {LANES}, and {heads} heads a multiple of {kv_heads} kv heads")
        self.lib = lib
        self.vocab = head.shape[0]
        # the input embedding runs as the module it is (hooks on it see every position)
        self.embed, self.n_positions = embed, cos.shape[0]
        vocab_pad = -(-self.vocab // LANES) * LANES
        keep: list[torch.Tensor] = []  # every tensor a struct points at stays alive here

        def own(t: torch.Tensor | None) -> int | None:
            if t is None:
                return None
            t = t.detach().float().contiguous()
            keep.append(t)
            return t.data_ptr()

        self.layers = (_Layer * len(layers))()
        for s, w in zip(self.layers, layers):
            s.ln1, s.ln2, s.eps1, s.eps2 = own(w.ln1), own(w.ln2), w.eps1, w.eps2
            s.w_qkv, s.b_qkv = own(_panels(lib, [w.q, w.k, w.v])), own(w.qkv_bias)
            s.w_o, s.b_o = own(_panels(lib, [w.o])), own(w.o_bias)
            s.w_gu, s.b_gu = own(_panels(lib, [w.gate, w.up])), own(w.gate_up_bias)
            s.w_down, s.b_down = own(_panels(lib, [w.down])), own(w.down_bias)
            if backward:
                s.t_qkv, s.t_o = own(_row_panels(lib, [w.q, w.k, w.v])), own(_row_panels(lib, [w.o]))
                s.t_gu, s.t_down = own(_row_panels(lib, [w.gate, w.up])), own(_row_panels(lib, [w.down]))
        head_b = None
        if head_bias is not None:
            head_b = torch.zeros(vocab_pad)
            head_b[:self.vocab] = head_bias
        self.model = _Model(n_layers=len(layers), hidden=hidden, hq=heads, hk=kv_heads, d=head_dim, inter=inter,
                            vocab=self.vocab, vocab_pad=vocab_pad, cap=0,
                            layers=ctypes.cast(self.layers, ctypes.POINTER(_Layer)),
                            final_w=own(final_w), head=own(_panels(lib, [head], vocab_pad - self.vocab)),
                            head_b=own(head_b), cos=own(cos), sin=own(sin), final_eps=final_eps, scale=scale)
        if backward:
            self.model.t_head = own(_row_panels(lib, [head], vocab_pad - self.vocab))
        self._keep = keep
        self._scratch = torch.empty(0)
        weights = head.numel() + sum(t.numel() for w in layers for t in (w.q, w.k, w.v, w.o, w.gate, w.up, w.down))
        self.by_columns = weights * 4 > ROW_SPLIT_MAX_BYTES

    def caches(self, k_caches: list[torch.Tensor], v_caches: list[torch.Tensor]) -> None:
        """Point the step at new caches: keys [B, hk, d, columns] and values
        [B, hk, columns, d], both contiguous, columns a multiple of LANES."""
        for s, k, v in zip(self.layers, k_caches, v_caches):
            if not (k.is_contiguous() and v.is_contiguous()) or k.shape[3] % LANES or k.shape[3] != v.shape[2]:
                raise ValueError(f"WholeStep.caches: keys [B, hk, d, columns] and values [B, hk, columns, d] must "
                                 f"be contiguous with columns a multiple of {LANES}")
            s.k_cache, s.v_cache = k.data_ptr(), v.data_ptr()
        self.model.cap = k_caches[0].shape[3]
        self._caches = (k_caches, v_caches)  # alive while the structs point at them

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, column: int, valid: torch.Tensor, *,
                 threads: int, min_rows: int = 1, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for tokens [B] or [B, T] (int64) at positions pos of the same shape,
        cached from `column` on: [B, vocab] or [B, T, vocab]. valid [caches, columns]
        (bool) marks what each cache row attends to, the new tokens' columns included. A
        row's tokens attend to each other causally, as in a prefill. rows [B] (int64): the
        cache row of each batch row (default: the same one)."""
        if tokens.dtype != torch.int64 or pos.dtype != torch.int64 or valid.dtype != torch.bool:
            raise ValueError("WholeStep: tokens and positions must be int64, valid bool")
        if pos.shape != tokens.shape or tokens.dim() not in (1, 2):
            raise ValueError(f"WholeStep: tokens {tuple(tokens.shape)} and positions {tuple(pos.shape)} must both "
                             f"be [B] or [B, T]")
        width = 1 if tokens.dim() == 1 else tokens.shape[1]
        caches = tokens.shape[0] if rows is None else self._caches[0][0].shape[0]
        if rows is not None and (rows.dtype != torch.int64 or rows.shape != tokens.shape[:1] or rows.numel() and (
                int(rows.min()) < 0 or int(rows.max()) >= caches)):
            raise ValueError(f"WholeStep: rows must be int64 [B] cache rows in [0, {caches})")
        if column + width > self.model.cap or valid.shape != (caches, self.model.cap):
            raise ValueError(f"WholeStep: columns {column}..{column + width - 1} and valid {tuple(valid.shape)} do "
                             f"not fit caches of {self.model.cap} columns for {tokens.shape[0]} rows")
        # the kernel indexes the rotary tables with these, unchecked
        if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= self.n_positions):
            raise ValueError(f"WholeStep: positions must lie in [0, {self.n_positions})")
        x = self.embed(tokens).float().contiguous()  # [B, (T,) H]
        pos, valid = pos.contiguous(), valid.contiguous()
        out = torch.empty(*tokens.shape, self.vocab)
        need = self.lib.gk_decode_step_scratch(ctypes.byref(self.model), tokens.shape[0], width, column, threads,
                                               min_rows, self.by_columns)
        if self._scratch.numel() < need:  # kept between calls: see gk_decode_step_scratch
            self._scratch = torch.empty(need)
        rows = None if rows is None else rows.contiguous()
        self.lib.gk_decode_step(ctypes.byref(self.model), tokens.shape[0], width, x.data_ptr(), pos.data_ptr(),
                                None if rows is None else rows.data_ptr(), column, valid.data_ptr(), out.data_ptr(),
                                threads, min_rows, self.by_columns, self._scratch.data_ptr())
        return out
