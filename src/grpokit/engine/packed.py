"""Linear maps of the decode step, with MKL's packed GEMM on a CPU.

A decode step multiplies a few dozen rows by every weight matrix of the model. For so
few rows a plain GEMM spends about as long re-arranging ("packing") the weight into
its kernel's tile layout as it spends multiplying, and it does that on every call. MKL
can pack a weight once for a given row count and reuse it (cblas_sgemm_pack /
cblas_sgemm_compute; torch exposes them as `mkl._mkl_reorder_linear_weight` and
`mkl._mkl_linear`). On the `small` benchmark model's shapes at 32 rows that halves the
time of each product (e.g. the 512 x 32k output layer: 12.5 -> 7.0 ms on 2 threads).

The pack is tied to one row count, and a sampling batch shrinks as rows finish. Rows
fewer than the packed count are zero-padded up to it while they are more than half of
it (a padded packed product still beats a plain one); below that the owner repacks for
the new count (`PackedSet.fit`), so a batch is packed at most log2(rows) times.
Weights under PACK_MIN_NUMEL elements are never packed, and nothing is packed when
the packable weights exceed PACK_MAX_BYTES.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PACK_MIN_ROWS = 8  # fewer rows than this: the pack costs more than it saves
# Smaller weights gain nothing: at 32 rows, a 128 x 1024 product went 46 -> 41 us and
# 512 x 128 got slower, while 512 x 512 went 123 -> 73 us (2 threads).
PACK_MIN_NUMEL = 1 << 18
# The packed copies live beside the weights for the whole generate call (MKL's layout
# pads: ~1.4x the output layer's bytes), so models with more packable weight than this
# keep plain products rather than add that much memory.
PACK_MAX_BYTES = 1 << 30


def packing_available(weight: torch.Tensor) -> bool:
    """MKL's packed GEMM covers float32 CPU weights in torch builds that ship MKL."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkl.is_available()
            and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight"))


class DecodeLinear:
    """y = x W^T + b, packed for a row count once `pack(rows)` has been called."""

    __slots__ = ("w", "b", "packed", "rows")

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None):
        self.w, self.b = w, b
        self.packed: torch.Tensor | None = None
        self.rows = 0

    def pack(self, rows: int) -> None:
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(self.w, rows)
        self.rows = rows

    def unpack(self) -> None:
        self.packed, self.rows = None, 0

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x W^T + b, plus `residual` when given (one fused product when unpacked and bias-free)."""
        m = x.numel() // x.shape[-1]
        if self.packed is None or not self.rows // 2 < m <= self.rows:
            if residual is None:
                return F.linear(x, self.w, self.b)
            if self.b is None:
                out = torch.addmm(residual.reshape(m, -1), x.reshape(m, -1), self.w.t())
                return out.view(residual.shape)
            return F.linear(x, self.w, self.b).add_(residual)
        flat = x.reshape(m, x.shape[-1])
        if m < self.rows:
            flat = F.pad(flat, (0, 0, 0, self.rows - m))
        y = torch.ops.mkl._mkl_linear(flat, self.packed, self.w, self.b, self.rows)
        y = y[:m].view(*x.shape[:-1], y.shape[-1])
        return y if residual is None else y.add_(residual)


class PackedSet:
    """The decode step's linear maps, packed together for the batch's current row count."""

    def __init__(self, linears: list[DecodeLinear], enabled: bool):
        self.linears = [lin for lin in linears if lin.w.numel() >= PACK_MIN_NUMEL]
        size = sum(lin.w.numel() * lin.w.element_size() for lin in self.linears)
        self.enabled = (enabled and bool(self.linears) and size <= PACK_MAX_BYTES
                        and packing_available(self.linears[0].w))

    @property
    def rows(self) -> int:
        """The row count the linears are packed for (0: not packed); they are packed together."""
        return self.linears[0].rows if self.linears else 0

    def fit(self, rows: int) -> None:
        """Pack for `rows` unless the current pack still serves them (more than half used);
        under PACK_MIN_ROWS, drop the pack."""
        packed = self.rows
        if not self.enabled or packed // 2 < rows <= packed or (rows < PACK_MIN_ROWS and not packed):
            return
        for lin in self.linears:
            if rows < PACK_MIN_ROWS:
                lin.unpack()
            else:
                lin.pack(rows)
