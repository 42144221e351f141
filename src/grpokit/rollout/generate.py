"""Batched sampling with a KV cache, written for speed on small batches and CPUs.

Rows that finish are dropped from the cache, so a batch with a few long completions
does not keep paying for the short ones.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Sequence

import torch

from grpokit.rollout.sampler import sample_next


@dataclass
class GenerationOutput:
    completion_ids: list[list[int]]  # per row, EOS included when sampled
    logprobs: list[list[float]]  # sampling log-prob of each completion token
    finished: list[bool]  # ended by EOS or a stop string (not by the token budget)
    stop_reason: list[str] = field(default_factory=list)  # "eos", "stop:<s>", "length"
    embeddings: torch.Tensor | None = None  # [N, H] mean last hidden state over the prompt
    forward_calls: int = 0


def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [B, P]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, P]
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def generate(model, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int, eos_ids: set[int],
             pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
             generator: torch.Generator | None = None, stop_strings: Sequence[str] = (), tokenizer=None,
             batch_size: int = 0, return_embeddings: bool = False) -> GenerationOutput:
    """Sample a completion for every prompt (ids already tokenized)."""
    if stop_strings and tokenizer is None:
        raise ValueError("stop strings need the tokenizer to decode")
    n = len(prompt_ids)
    bs = batch_size if batch_size > 0 else n
    parts = [_generate_chunk(model, prompt_ids[i:i + bs], max_new_tokens=max_new_tokens, eos_ids=eos_ids,
                             pad_id=pad_id, temperature=temperature, top_p=top_p, generator=generator,
                             stop_strings=stop_strings, tokenizer=tokenizer, return_embeddings=return_embeddings)
             for i in range(0, n, bs)]
    return concat_outputs(parts)


def concat_outputs(parts: Sequence[GenerationOutput]) -> GenerationOutput:
    """The outputs of consecutive row chunks as one output, rows in order."""
    out = GenerationOutput([], [], [], [], None, 0)
    embs = []
    for p in parts:
        out.completion_ids += p.completion_ids
        out.logprobs += p.logprobs
        out.finished += p.finished
        out.stop_reason += p.stop_reason
        out.forward_calls += p.forward_calls
        if p.embeddings is not None:
            embs.append(p.embeddings)
    out.embeddings = torch.cat(embs) if embs else None
    return out


def _generate_chunk(model, prompt_ids, *, max_new_tokens, eos_ids, pad_id, temperature, top_p, generator,
                    stop_strings, tokenizer, return_embeddings) -> GenerationOutput:
    from transformers import DynamicCache

    was_training = model.training
    model.eval()
    n = len(prompt_ids)
    ids, mask = left_pad(prompt_ids, pad_id)  # [B, P]
    pos = (mask.cumsum(dim=1) - 1).clamp_min(0)  # [B, P]
    cache = DynamicCache(config=getattr(model, "config", None))
    ck = _cache_kwarg(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                output_hidden_states=return_embeddings, **{ck: cache})
    calls = 1
    embeddings = None
    if return_embeddings:
        h = out.hidden_states[-1].float()  # [B, P, H]
        m = mask.unsqueeze(-1).float()
        embeddings = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, H]
    logits = out.logits[:, -1, :]  # [B, V]

    eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
    tokens_out: list[list[int]] = [[] for _ in range(n)]
    logps_out: list[list[float]] = [[] for _ in range(n)]
    reason = ["length"] * n
    active = torch.arange(n)  # original row of each cache row
    next_pos = pos[:, -1] + 1  # [B]
    max_stop = max((len(s) for s in stop_strings), default=0)

    for t in range(max_new_tokens):
        tok, lp = sample_next(logits, temperature=temperature, top_p=top_p, generator=generator)  # [B], [B]
        tok_l, lp_l = tok.tolist(), lp.tolist()
        done = torch.isin(tok, eos) if len(eos) else torch.zeros_like(tok, dtype=torch.bool)  # [B]
        done_l = done.tolist()
        for j, row in enumerate(active.tolist()):
            tokens_out[row].append(tok_l[j])
            logps_out[row].append(lp_l[j])
            if done_l[j]:
                reason[row] = "eos"
            elif stop_strings:
                # Decode only a short tail: stop strings are matched on the text end.
                tail = tokenizer.decode(tokens_out[row][-(max_stop + 8):], skip_special_tokens=False)
                hit = next((s for s in stop_strings if tail.endswith(s)), None)
                if hit is not None:
                    reason[row] = f"stop:{hit}"
                    done_l[j] = True
        if t == max_new_tokens - 1:
            break
        keep = [j for j, d in enumerate(done_l) if not d]
        if not keep:
            break
        if len(keep) < len(done_l):
            keep_t = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(keep_t)
            active, mask, next_pos, tok = active[keep_t], mask[keep_t], next_pos[keep_t], tok[keep_t]
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=mask.dtype)], dim=1)  # [B, P+t+1]
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    use_cache=True, **{ck: cache})
        calls += 1
        next_pos = next_pos + 1
        logits = out.logits[:, -1, :]
    if was_training:
        model.train()
    finished = [r != "length" for r in reason]
    return GenerationOutput(tokens_out, logps_out, finished, reason, embeddings, calls)
