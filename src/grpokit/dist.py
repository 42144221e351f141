"""Data-parallel runs on torch.distributed: who this process is, the one gather of a
step's experience, and the reductions of Phase 4.

Launch with torchrun (`torchrun --nproc-per-node N -m grpokit train ...`, or
`grpokit train --nproc N`); the process group is set up from torchrun's environment
(RANK, WORLD_SIZE, MASTER_ADDR, ...). Without WORLD_SIZE nothing is initialised and
every function here is the identity, so one process pays nothing.

How a step is split (docs/distributed.md): every rank draws the same prompt list;
rank r samples a contiguous share of the prompts (all completions of a prompt on one
rank) and scores its rows; the completions and rewards are gathered so every rank
holds the whole step and runs grouping and advantages on it, exactly as one process
would; Phase 4 splits the rows again and sums gradients over ranks.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import torch

# A collective that waits longer than this (a rank died or hangs) raises instead of
# blocking forever; torchrun then stops the other ranks.
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""
    objects: Any = None  # process group for Python objects (gloo, also under NCCL)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()
_current: World | None = None


def env_world_size() -> int:
    """WORLD_SIZE as torchrun (or accelerate launch) sets it; 1 when unset."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={raw!r}: expected an integer") from None


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """`python -m torch.distributed.run --nproc-per-node N -m grpokit <argv without --nproc>`."""
    if env_world_size() > 1:
        raise ValueError("--nproc: this process already runs under torchrun (WORLD_SIZE is set); drop --nproc")
    import sys

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", "grpokit", *rest]


def init(*, group_of_one: bool = False) -> World:
    """This process's World, joining the process group the first time (idempotent).
    NCCL when CUDA is available, gloo otherwise; GRPOKIT_DIST_TIMEOUT (seconds) bounds
    every collective. group_of_one: set up a process group even for a single process
    outside torchrun (FSDP needs one to shard over)."""
    global _current
    if _current is not None and not (group_of_one and not _current.backend):
        return _current
    size = env_world_size()
    if size <= 1 and not group_of_one:
        _current = SINGLE
        return _current
    import torch.distributed as td

    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=float(os.environ.get("GRPOKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    if not td.is_initialized():
        if "MASTER_ADDR" in os.environ:
            td.init_process_group(backend=backend, timeout=timeout)
        else:  # one process, no launcher: an in-memory rendezvous
            td.init_process_group(backend=backend, timeout=timeout, store=td.HashStore(), rank=0, world_size=1)
        atexit.register(teardown)
    objects = td.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    _current = World(rank=rank, size=size, local_rank=local_rank, backend=backend, objects=objects)
    return _current


def teardown() -> None:
    global _current
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
    _current = None


def share(n: int, world: World) -> range:
    """This rank's contiguous share of n items: the first n % size ranks take one more."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return range(start, start + base + (1 if world.rank < extra else 0))


def gather(world: World, obj: Any) -> list[Any]:
    """Every rank's obj, in rank order (pickled over gloo); [obj] in one process."""
    if not world.distributed:
        return [obj]
    import torch.distributed as td

    out: list[Any] = [None] * world.size
    td.all_gather_object(out, obj, group=world.objects)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as td

        td.barrier(group=world.objects)


def broadcast_parameters(world: World, model: torch.nn.Module) -> None:
    """Rank 0's weights and buffers on every rank (they start equal only if every rank
    built the model the same way; this makes it so)."""
    if not world.distributed:
        return
    import torch.distributed as td

    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            td.broadcast(t.data, src=0)


def sum_gradients(world: World, params: Sequence[torch.nn.Parameter]) -> None:
    """Replace every gradient by its sum over ranks, in place. A parameter without a
    gradient on this rank only (it trained no rows, or none that reach it) counts as
    zeros, so every rank ends with the same gradients.

    Sums, not means: each rank's loss is already divided by the global batch's
    normaliser (tokens, sequences or a constant), so the sum over ranks is the loss of
    the whole batch and its gradient is the one-process gradient.

    One asynchronous all-reduce per gradient, all in flight at once, in the order of
    `params` (the same on every rank): no flat copy of the gradients is made and copied
    back, which on 2 CPU processes took longer than the reduction itself."""
    if not world.distributed:
        return
    import torch.distributed as td

    # A parameter no rank reached keeps no gradient (the optimizer skips it, as in one process).
    reached = [any(flags) for flags in zip(*gather(world, [p.grad is not None for p in params]))]
    pending = []
    for p, used in zip(params, reached):
        if not used:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        pending.append(td.all_reduce(p.grad, op=td.ReduceOp.SUM, async_op=True))
    for work in pending:
        work.wait()


def reduce_metrics(world: World, sums: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """Weighted means over all ranks: sum of numerators over sum of weights per key
    (never a mean of per-rank means)."""
    parts = gather(world, (sums, weights))
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for s, w in parts:
        for k, v in s.items():
            num[k] = num.get(k, 0.0) + v
            den[k] = den.get(k, 0.0) + w[k]
    return {k: num[k] / den[k] for k in num if den[k] > 0}


def total(world: World, value: float) -> float:
    """Sum of value over ranks."""
    return float(sum(gather(world, float(value))))


def maximum(world: World, value: float) -> float:
    """Largest value over ranks."""
    return float(max(gather(world, float(value))))


class Quiet:
    """Stands in for the run logger, reporter and progress bar on ranks other than 0:
    every method call does nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def gather_generation(world: World, gen):
    """The step's GenerationOutput from every rank's share, rows in rank order (which is
    the step's row order: each rank sampled a contiguous slice). A MultiTurnOutput (the
    tool loop) comes back as one, its tool metrics recomputed over the whole step."""
    if not world.distributed:
        return gen
    from grpokit.rollout.generate import concat_outputs
    from grpokit.rollout.multiturn import concat_multiturn

    parts = gather(world, gen)
    # the tool loop's rows carry masks, calls and a step summary (rollout.tools)
    multiturn = any(hasattr(p, "completion_masks") for p in parts)
    return concat_multiturn(parts) if multiturn else concat_outputs(parts)


def gather_scores(world: World, scores):
    """RewardScores of every rank's rows as one RewardScores over the step's rows."""
    if not world.distributed:
        return scores
    from grpokit.rewards.manager import concat_scores

    return concat_scores(gather(world, scores))


def score_own(world: World, score, rows: range, prompts, completions, fields, completion_ids):
    """Phase 1's scoring, split: this rank scores rows[start:stop] of the step (the rows it
    sampled) with score(prompts, completions, fields, completion_ids=...) and the
    RewardScores of all rows come back, in row order."""
    if not world.distributed:
        return score(prompts, completions, fields, completion_ids=completion_ids)
    s = slice(rows.start, rows.stop)
    return gather_scores(world, score(prompts[s], completions[s], fields[s], completion_ids=completion_ids[s]))


def own_rows_logprobs(world: World, batch, logprobs, *, empty_too: bool = False) -> torch.Tensor:
    """logprobs(batch) -> [N, L] computed for the rows this rank trains in Phase 4 only
    (update_policy reads no others); the other rows are zeros. One process: logprobs(batch).
    empty_too: call logprobs also when this rank has no rows (a sharded model's pass
    must run on every rank)."""
    if not world.distributed:
        return logprobs(batch)
    from grpokit.grouping.base import select_rows

    rows = share(batch.size, world)
    out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
    if len(rows) or empty_too:
        part = logprobs(select_rows(batch, torch.arange(rows.start, rows.stop)))
        out = out.to(device=part.device, dtype=part.dtype)
        out[rows.start:rows.stop, :part.shape[1]] = part
    return out
