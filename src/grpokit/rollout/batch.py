"""Lays sampled completions out as the padded tensors the update phase trains on."""
from __future__ import annotations

from typing import Sequence

import torch

from grpokit.types import RolloutBatch


def build_rollout_batch(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                        logprobs: Sequence[Sequence[float]], *, pad_id: int, example_index: Sequence[int],
                        finished: Sequence[bool], completions: Sequence[str],
                        completion_masks: Sequence[Sequence[int]] | None = None,
                        context_embedding: torch.Tensor | None = None, metadata: dict | None = None) -> RolloutBatch:
    """[left-padded prompt | completion | right padding] per row.

    completion_masks (optional, per completion token) marks tokens that the model did
    not write (tool output) with 0; they stay in the sequence but are never trained on.
    """
    n = len(prompt_ids)
    p_len = max(len(p) for p in prompt_ids)
    c_len = max(1, max(len(c) for c in completion_ids))
    width = p_len + c_len
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)  # [N, L]
    attn = torch.zeros((n, width), dtype=torch.long)  # [N, L]
    loss_mask = torch.zeros((n, width), dtype=torch.float32)  # [N, L]
    lps = torch.zeros((n, width), dtype=torch.float32)  # [N, L]
    for i in range(n):
        p, c = prompt_ids[i], completion_ids[i]
        input_ids[i, p_len - len(p):p_len] = torch.tensor(p, dtype=torch.long)
        attn[i, p_len - len(p):p_len + len(c)] = 1
        if c:
            input_ids[i, p_len:p_len + len(c)] = torch.tensor(c, dtype=torch.long)
            m = torch.tensor(completion_masks[i], dtype=torch.float32) if completion_masks else torch.ones(len(c))
            loss_mask[i, p_len:p_len + len(c)] = m
            lps[i, p_len:p_len + len(c)] = torch.tensor(logprobs[i], dtype=torch.float32) * m
    return RolloutBatch(
        input_ids=input_ids, attention_mask=attn, loss_mask=loss_mask, logprobs=lps, prompt_len=p_len,
        completion_ids=[list(c) for c in completion_ids], completions=list(completions),
        example_index=torch.tensor(list(example_index), dtype=torch.long),
        finished=torch.tensor(list(finished), dtype=torch.bool), context_embedding=context_embedding,
        metadata=dict(metadata or {}),
    )
