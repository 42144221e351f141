"""The model side of a KV-cached sampling loop: prefill once, then one token per step.

Two implementations with one interface: `LeanDecoder` (grpokit's own decode step for
Llama-family models) and `_TransformersStepper` (the model's own forward with a
`DynamicCache`, for everything else). The sampling loops in `generate` and `multiturn`
only see `Stepper`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from grpokit.model.device import model_device
from grpokit.model.forward import cache_kwarg
from grpokit.engine.lean import LeanDecoder, unsupported_reason, whole_step_reason

log = logging.getLogger("grpokit")
_reported: set[str] = set()


@dataclass
class Prefill:
    logits: torch.Tensor  # [B, V] at each row's last prompt position
    embeddings: torch.Tensor | None  # [B, H] mean final hidden state over the prompt, when asked for


@dataclass
class Started:
    stepper: "_LeanStepper | _StaticLeanStepper | _TransformersStepper"
    logits: torch.Tensor  # [B, V] for the first new token of every row
    embeddings: torch.Tensor | None  # [B, H]
    next_pos: torch.Tensor  # [B] position id of each row's first new token


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [B, P]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, P]
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def start(model, contexts: Sequence[Sequence[int]], *, pad_id: int, new_tokens: int, return_embeddings: bool,
          lean: bool = True, cuda_graphs: bool = True) -> Started:
    """Prefill every context and return a stepper ready for the first new token.

    A GRPO batch holds each prompt G times; each distinct context is prefilled once and
    its cache rows are then copied to the rows that share it.
    """
    index: dict[tuple, int] = {}
    rows = [index.setdefault(tuple(c), len(index)) for c in contexts]
    unique = [list(c) for c in index]
    device = model_device(model)
    ids, mask = (t.to(device) for t in left_pad(unique, pad_id))  # [U, P]
    pos = (mask.cumsum(dim=1) - 1).clamp_min(0)  # [U, P]
    stepper = make_stepper(model, capacity=ids.shape[1] + new_tokens, lean=lean, cuda_graphs=cuda_graphs)
    first = stepper.prefill(ids, mask, pos, return_embeddings)
    logits, emb, next_pos = first.logits, first.embeddings, pos[:, -1] + 1
    if len(unique) < len(rows):
        expand = torch.tensor(rows, dtype=torch.long, device=device)
        stepper.select(expand)
        logits, next_pos = logits[expand], next_pos[expand]
        emb = emb[expand] if emb is not None else None
    return Started(stepper, logits, emb, next_pos)


def _mean_over_prompt(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).float()  # [B, P, 1]
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, H]


class _TransformersStepper:
    def __init__(self, model):
        self.model = model
        self.cache_kw = cache_kwarg(model)
        self.mask: torch.Tensor | None = None
        self.cache = None

    def prefill(self, ids, mask, pos, return_embeddings: bool) -> Prefill:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=getattr(self.model, "config", None))
        self.mask = mask
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         output_hidden_states=return_embeddings, **{self.cache_kw: self.cache})
        emb = _mean_over_prompt(out.hidden_states[-1], mask) if return_embeddings else None
        return Prefill(out.logits[:, -1, :], emb)

    def step(self, tokens, pos) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)  # [B, S+1]
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=pos[:, None],
                         use_cache=True, **{self.cache_kw: self.cache})
        return out.logits[:, -1, :]

    def select(self, keep) -> None:
        self.cache.batch_select_indices(keep)
        self.mask = self.mask[keep]


def _lean_prefill(dec: LeanDecoder, ids, mask, pos, return_embeddings: bool) -> Prefill:
    if not return_embeddings:
        return Prefill(dec.prefill_logits(ids, mask, pos), None)
    hidden = dec.prefill(ids, mask, pos)  # [B, P, H]
    return Prefill(dec.logits(hidden[:, -1]), _mean_over_prompt(hidden, mask))


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


def loop_threads(model, lean: bool = True) -> int | None:
    """torch's intra-op threads for a sampling loop over `model` (None: leave them).

    With the whole step in C (`engine.lean.whole_step_reason`), torch's ops around it
    (cache copies, sampling) are too small to split; run on more threads they wake
    torch's OpenMP workers, which then spin for milliseconds on the cores the step's own
    threads need (a W1 step: 0.46 -> 0.9 ms, and 1.2-2.5 ms for the first ones after the
    prefill). Such loops run on one torch thread, its idle workers parked first."""
    return 1 if lean and model_device(model).type == "cpu" and whole_step_reason(model) is None else None


def make_stepper(model, *, capacity: int, lean: bool = True, cuda_graphs: bool = True):
    """The lean stepper when asked for and the model is supported, else transformers' forward.
    On a CUDA device the lean step is replayed from a CUDA graph unless cuda_graphs=False.

    capacity: prompt width + new tokens, the most positions the cache will hold.
    """
    if lean:
        reason = unsupported_reason(model)
        if reason is None:
            if cuda_graphs and model_device(model).type == "cuda":
                return _StaticLeanStepper(model, capacity, use_graph=True)
            return _LeanStepper(model, capacity)
        if reason not in _reported:
            _reported.add(reason)
            log.info("sampling with transformers' forward (lean decoding does not cover %s)", reason)
    return _TransformersStepper(model)
