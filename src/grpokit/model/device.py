"""Where the model lives: resolving `run.device`, and the few calls that differ by device.

Everything that feeds the model (prompt ids, training batches) is moved to the model's
device at the model boundary; rewards, group ids and advantages stay on the CPU, where
the grouping phase works on them.
"""
from __future__ import annotations

import dataclasses

import torch

from grpokit.types import RolloutBatch

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda, or cuda:N"


def resolve_device(spec: str) -> torch.device:
    """`auto` -> cuda when torch sees a GPU, else cpu; otherwise the named device,
    checked to exist, so a typo or a missing GPU is an error before any model loads."""
    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(s)
    except RuntimeError as e:
        raise ValueError(f"device {spec!r} is not a device name ({DEVICE_HELP})") from e
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"device {spec!r}: grpokit runs on {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: torch sees no CUDA GPU (torch {torch.__version__}); use cpu or auto")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def model_device(model) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a host clock read after it measures the work
    (a no-op on the CPU, where every op has finished when it returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_to(batch: RolloutBatch, device: torch.device) -> RolloutBatch:
    """The batch with its [N, L] tensors on `device` (the same object when they are
    there already); per-row metadata stays where it is."""
    if batch.input_ids.device == device:
        return batch
    return dataclasses.replace(batch, **{k: getattr(batch, k).to(device) for k in
                                         ("input_ids", "attention_mask", "loss_mask", "logprobs")})
