"""The model side of a KV-cached sampling loop: prefill once, then one token per step.

A stepper has three methods: `prefill(ids, mask, pos, return_embeddings) -> Prefill`,
`step(tokens, pos) -> logits [B, V]` and `select(keep)` (keep these cache rows, in this
order). `TransformersStepper` runs the model's own forward with a `DynamicCache`; the
engine's lean steppers (engine/stepper.py) plug in through the same three methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from grpokit.model.device import model_device
from grpokit.model.forward import cache_kwarg


@dataclass
class Prefill:
    logits: torch.Tensor  # [B, V] at each row's last prompt position
    embeddings: torch.Tensor | None  # [B, H] mean final hidden state over the prompt, when asked for


@dataclass
class Started:
    stepper: object  # a stepper (see the module docstring)
    logits: torch.Tensor  # [B, V] for the first new token of every row
    embeddings: torch.Tensor | None  # [B, H]
    next_pos: torch.Tensor  # [B] position id of each row's first new token


StepperFactory = Callable[..., object]  # (model, *, capacity) -> stepper


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [B, P]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, P]
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def mean_over_prompt(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).float()  # [B, P, 1]
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, H]


class TransformersStepper:
    def __init__(self, model, capacity: int = 0):
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
        emb = mean_over_prompt(out.hidden_states[-1], mask) if return_embeddings else None
        return Prefill(out.logits[:, -1, :], emb)

    def step(self, tokens, pos) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)  # [B, S+1]
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=pos[:, None],
                         use_cache=True, **{self.cache_kw: self.cache})
        return out.logits[:, -1, :]

    def select(self, keep) -> None:
        self.cache.batch_select_indices(keep)
        self.mask = self.mask[keep]


def start(model, contexts: Sequence[Sequence[int]], *, pad_id: int, new_tokens: int, return_embeddings: bool,
          make_stepper: StepperFactory = TransformersStepper) -> Started:
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
    stepper = make_stepper(model, capacity=ids.shape[1] + new_tokens)
    first = stepper.prefill(ids, mask, pos, return_embeddings)
    logits, emb, next_pos = first.logits, first.embeddings, pos[:, -1] + 1
    if len(unique) < len(rows):
        expand = torch.tensor(rows, dtype=torch.long, device=device)
        stepper.select(expand)
        logits, next_pos = logits[expand], next_pos[expand]
        emb = emb[expand] if emb is not None else None
    return Started(stepper, logits, emb, next_pos)
