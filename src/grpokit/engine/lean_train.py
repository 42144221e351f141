"""Training forms of the Llama-family MLP and RMSNorm that keep fewer activations.

Autograd keeps, until backward, every tensor an op needs for its gradient. Two parts
of a Qwen2/Llama/Mistral decoder layer keep more than the math needs:

- the MLP, down(silu(gate(x)) * up(x)), keeps four [tokens, intermediate] tensors:
  gate(x), silu(gate(x)), up(x) and the product. `_SwiGLUDown` keeps gate(x) and up(x)
  and recomputes the other two in backward (two elementwise passes);
- transformers' RMSNorm is written as five ops and keeps both its input and the
  normalised input (torch's `F.rms_norm` decomposes into the same ops on a CPU when
  autograd records). `_RMSNorm` keeps the input and one statistic per position. It is
  used for float32 only: for other dtypes transformers normalises in float32 and
  rounds in between, and those modules keep their own forward.

Measured on the `small` benchmark model (8 layers, hidden 512, intermediate 1408, one
decoder pass over 32 x 71 positions): the bytes saved for backward, counted with
`saved_tensors_hooks`, go from 1028 to 659 MiB. Gradients are
the plain ones up to float rounding (tests/test_lean_train.py). Projections are called
as modules, so LoRA-wrapped gate and up projections still work; the down projection
must be a plain nn.Linear, whose weight `_SwiGLUDown` uses directly.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from grpokit.engine.rmsnorm import rms_normalize

from grpokit.model.forward import base_model, llama_family_reason

SILU_MODULES = {"SiLU", "SiLUActivation"}  # torch's and transformers' (both F.silu)


class _SwiGLUDown(torch.autograd.Function):
    """linear(silu(g) * u, w, b), saving g, u and w only."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(g, u, w)
        ctx.has_bias = b is not None
        return F.linear(F.silu(g) * u, w, b)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        g, u, w = ctx.saved_tensors
        act = F.silu(g)
        grad_h = grad_out @ w  # [..., I]
        flat_out = grad_out.reshape(-1, grad_out.shape[-1])  # [T, H]
        grad_w = flat_out.t() @ (act * u).reshape(-1, u.shape[-1]) if ctx.needs_input_grad[2] else None
        grad_b = flat_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        grad_u = grad_h * act if ctx.needs_input_grad[1] else None
        grad_g = torch.ops.aten.silu_backward(grad_h * u, g) if ctx.needs_input_grad[0] else None
        return grad_g, grad_u, grad_w, grad_b


class _RMSNorm(torch.autograd.Function):
    """w * (x * rsqrt(mean(x^2) + eps)), the ops of transformers' float32 RMSNorm in its
    order, saving x and the per-position rsqrt only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        xhat, rstd = rms_normalize(x, eps)  # [...], [..., 1]
        ctx.save_for_backward(x, rstd, w)
        return w * xhat

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, rstd, w = ctx.saved_tensors
        xhat = x * rstd
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad_out * xhat).reshape(-1, x.shape[-1]).sum(0)
        grad_x = None
        if ctx.needs_input_grad[0]:
            g = grad_out * w
            # d/dx of x * rstd(x): rstd * (g - xhat * mean(g * xhat))
            grad_x = rstd * (g - xhat * (g * xhat).mean(-1, keepdim=True))
        return grad_x, grad_w, None


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    g, u = self.gate_proj(x), self.up_proj(x)
    if not torch.is_grad_enabled():
        return self.down_proj(F.silu(g) * u)
    return _SwiGLUDown.apply(g, u, self.down_proj.weight, self.down_proj.bias)


def _norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled() or x.dtype != torch.float32 or self.weight.dtype != torch.float32:
        return type(self).forward(self, x)
    return _RMSNorm.apply(x, self.weight, self.variance_epsilon)


def _mlp_reason(mlp) -> str | None:
    if mlp is None or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return "unexpected MLP layout"
    if type(mlp.act_fn).__name__ not in SILU_MODULES:
        return f"activation {type(mlp.act_fn).__name__}"
    if type(mlp.down_proj) is not torch.nn.Linear:
        return "adapter-wrapped down projection (e.g. LoRA on down_proj)"
    return None


def unsupported_reason(model) -> str | None:
    """None when `install` covers this model; else why not."""
    reason = llama_family_reason(model)
    if reason:
        return reason
    layers = getattr(getattr(base_model(model), "model", None), "layers", None)
    if layers is None:
        return "unexpected module layout"
    for layer in layers:
        reason = _mlp_reason(getattr(layer, "mlp", None))
        if reason:
            return reason
    return None


def _norms(base):
    dec = base.model
    for layer in dec.layers:
        yield layer.input_layernorm
        yield layer.post_attention_layernorm
    yield dec.norm


def install(model) -> bool:
    """Give `model`'s MLPs and RMSNorms their lean training forms. Returns False (and
    changes nothing) when the model is not covered. The forms are bound to each module
    instance: the policy gets them, a reference copied before does not need them (it
    never runs backward)."""
    if unsupported_reason(model) is not None:
        return False
    base = base_model(model)
    for layer in base.model.layers:
        layer.mlp.forward = types.MethodType(_mlp_forward, layer.mlp)
    for norm in _norms(base):
        if hasattr(norm, "variance_epsilon") and hasattr(norm, "weight"):
            norm.forward = types.MethodType(_norm_forward, norm)
    return True
