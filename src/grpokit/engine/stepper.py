"""grpokit's lean decode steps behind the stepper interface of `rollout.stepper`, and the
Sampler that uses them (`lean_sampler`): the C step on CPUs, a CUDA graph on GPUs, and
transformers' forward for the models the lean step does not cover.
"""
from __future__ import annotations

import contextlib
import logging

import torch

from grpokit.model.device import model_device
from grpokit.rollout.generate import StepSampler
from grpokit.rollout.stepper import Prefill, TransformersStepper, mean_over_prompt
from grpokit.engine.lean import LeanDecoder, unsupported_reason, whole_step_reason
from grpokit.engine.threads import intra_op_threads

log = logging.getLogger("grpokit")
_reported: set[str] = set()


def _lean_prefill(dec: LeanDecoder, ids, mask, pos, return_embeddings: bool) -> Prefill:
    if not return_embeddings:
        return Prefill(dec.prefill_logits(ids, mask, pos), None)
    hidden = dec.prefill(ids, mask, pos)  # [B, P, H]
    return Prefill(dec.logits(hidden[:, -1]), mean_over_prompt(hidden, mask))


class _LeanStepper:
    def __init__(self, model, capacity: int):
        self.dec = LeanDecoder(model, capacity)

    def prefill(self, ids, mask, pos, return_embeddings: bool) -> Prefill:
        return _lean_prefill(self.dec, ids, mask, pos, return_embeddings)

    def step(self, tokens, pos) -> torch.Tensor:
        return self.dec.step(tokens, pos)

    def select(self, keep) -> None:
        self.dec.select(keep)


class _StaticLeanStepper:
    """The lean decode step at fixed shapes, replayed from a CUDA graph on a GPU.

    A decode step of a small model on a GPU is hundreds of tiny kernel launches; a graph
    replays them for the cost of one. Graphs need fixed shapes and addresses, so the
    step attends over the whole cache under a mask (`LeanDecoder.static_step`) and rows
    that finish stay in the cache, their outputs ignored, until half of them are gone;
    then the cache is compacted and the graph captured again at the smaller size.
    use_graph=False runs the same static step eagerly (how the CPU tests check it).
    """

    def __init__(self, model, capacity: int, use_graph: bool):
        self.dec = LeanDecoder(model, capacity, static=True)
        self.use_graph = use_graph
        self.graph = None
        self.rows: torch.Tensor | None = None  # [B_live] cache row of each live row

    def prefill(self, ids, mask, pos, return_embeddings: bool) -> Prefill:
        first = _lean_prefill(self.dec, ids, mask, pos, return_embeddings)
        self._reset_rows(ids.shape[0], ids.device)
        return first

    def _reset_rows(self, n: int, device) -> None:
        self.rows = torch.arange(n, device=device)
        self.tok = torch.zeros(n, dtype=torch.long, device=device)  # inputs of every cache row
        self.pos = torch.zeros(n, dtype=torch.long, device=device)
        self.col = torch.zeros(1, dtype=torch.long, device=device)  # the cache column being written
        self.graph = None

    def select(self, keep) -> None:
        rows = self.rows[keep]
        # Dropping rows is deferred; copying a prefilled prompt to its group's rows (start())
        # is not, since every row needs its own cache row.
        if rows.numel() < self.rows.numel() and 2 * rows.numel() > self.tok.shape[0]:
            self.rows = rows
            return
        self.dec.select(rows)
        self._reset_rows(rows.numel(), rows.device)

    def step(self, tokens, pos) -> torch.Tensor:
        dec = self.dec
        if dec.length >= dec.capacity:
            raise ValueError(f"the KV cache is full ({dec.capacity} positions)")
        self.tok[self.rows] = tokens
        self.pos[self.rows] = pos
        self.col.fill_(dec.length)
        dec.valid[:, dec.length] = True
        if not self.use_graph:
            out = dec.static_step(self.tok, self.pos, self.col)
        elif self.graph is None:
            out = self._capture()
        else:
            self.graph.replay()
            out = self.out
        dec.length += 1
        return out[self.rows]  # a copy: the graph's output buffer is rewritten by the next replay

    def _capture(self) -> torch.Tensor:
        dec = self.dec
        # Warm-up on a side stream, as graph capture requires. It performs this step's
        # cache writes; the capture records them and the replay repeats them (same values).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                dec.static_step(self.tok, self.pos, self.col)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = dec.static_step(self.tok, self.pos, self.col)
        self.graph.replay()
        return self.out


def loop_threads(model) -> int | None:
    """torch's intra-op threads for a sampling loop over `model` (None: leave them).

    With the whole step in C (`engine.lean.whole_step_reason`), torch's ops around it
    (cache copies, sampling) are too small to split; run on more threads they wake
    torch's OpenMP workers, which then spin for milliseconds on the cores the step's own
    threads need (a W1 step: 0.46 -> 0.9 ms, and 1.2-2.5 ms for the first ones after the
    prefill). Such loops run on one torch thread, its idle workers parked first."""
    return 1 if model_device(model).type == "cpu" and whole_step_reason(model) is None else None


def make_stepper(model, *, capacity: int, cuda_graphs: bool = True):
    """The lean stepper when the model is supported, else transformers' forward.
    On a CUDA device the lean step is replayed from a CUDA graph unless cuda_graphs=False.

    capacity: prompt width + new tokens, the most positions the cache will hold.
    """
    reason = unsupported_reason(model)
    if reason is None:
        if cuda_graphs and model_device(model).type == "cuda":
            return _StaticLeanStepper(model, capacity, use_graph=True)
        return _LeanStepper(model, capacity)
    if reason not in _reported:
        _reported.add(reason)
        log.info("sampling with transformers' forward (lean decoding does not cover %s)", reason)
    return TransformersStepper(model)


def lean_stepper(cuda_graphs: bool = True):
    """The stepper factory of the lean sampler: (model, capacity) -> stepper."""
    def factory(model, *, capacity: int):
        return make_stepper(model, capacity=capacity, cuda_graphs=cuda_graphs)
    return factory


def loop_context(model):
    """The sampling loop's torch threads (`loop_threads`), torch's idle workers parked first."""
    n = loop_threads(model)
    return intra_op_threads(n, park=True) if n is not None else contextlib.nullcontext()


def lean_sampler(model, tokenizer, eos_ids, pad_id: int, *, cuda_graphs: bool = True) -> StepSampler:
    """The `lean` Sampler: grpokit's own decode step where the model allows it."""
    return StepSampler(model, tokenizer, eos_ids, pad_id, make_stepper=lean_stepper(cuda_graphs),
                       loop_context=loop_context)
