"""Optimizer and learning-rate schedule shared by the SFT and GRPO stages."""
from __future__ import annotations

import math

import torch


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float = 0.0,
                   betas=(0.9, 0.999), fused: bool = False) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters. fused: one kernel over all tensors (same
    update, different rounding), used where every parameter is a floating-point tensor
    on one CPU or CUDA device; otherwise PyTorch's default implementation."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    devices = {p.device.type for p in params}
    fused = fused and len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), fused=fused or None)


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier on the peak LR at `step` (0-based): linear warm-up, then the schedule.

    constant: 1; linear: 1 -> 0 at `total`; cosine: 0.5 * (1 + cos(pi * progress)).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; valid: constant, linear, cosine")


# GRPO's learning-rate default depends on the model's size: 1e-6 suits models of 100M
# parameters and more (the usual rate for RL on pretrained LMs), but leaves the tiny
# models (under 25M parameters, `model.name_or_path: tiny`) practically unmoved in a
# short run; they train at the rate of `grpokit demo` (1e-4).
SMALL_MODEL_PARAMS = 50_000_000
SMALL_MODEL_LR = 1e-4
LARGE_MODEL_LR = 1e-6


def default_lr(n_params: int) -> float:
    """GRPO's peak learning rate when `optim.lr` is unset, by trainable parameter count."""
    return SMALL_MODEL_LR if n_params < SMALL_MODEL_PARAMS else LARGE_MODEL_LR


def make_scheduler(optimizer, *, warmup: int, total: int, schedule: str):
    lr_factor(0, warmup=warmup, total=total, schedule=schedule)  # fail fast on a bad name
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup=warmup, total=total, schedule=schedule))


def set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)
