"""Batched sampling with a KV cache, written for speed on small batches and CPUs.

Rows that finish are dropped from the cache, so a batch with a few long completions
does not keep paying for the short ones. A prompt repeated G times (a GRPO group) is
prefilled once. The model side is a stepper (`rollout.stepper`): transformers' forward
here, grpokit's lean decode step when the engine's sampler plugs one in
(`engine.stepper.lean_sampler`). `StepSampler` is the `Sampler` over a stepper.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Sequence

import torch

from grpokit.rollout.sampler import sample_next
from grpokit.rollout.seeding import keyed
from grpokit.rollout.stepper import StepperFactory, TransformersStepper, left_pad, start
from grpokit.types import GenerationOutput, SamplingParams

__all__ = ["GenerationOutput", "SamplingParams", "StepSampler", "concat_outputs", "decode_chunk", "generate",
           "left_pad", "sampling_mode"]


def sampling_mode(fn):
    """Run a sampling loop under torch.inference_mode and hand its prompt embeddings back
    as ordinary tensors. Inference mode skips autograd's per-op bookkeeping (version
    counters, view tracking) that no_grad keeps: a CPU decode step took 8-15 % less on
    the benchmark models. Its tensors may not be changed in place outside it, hence the
    copy of the embeddings, which grouping code may use as it likes."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode():
            out = fn(*args, **kwargs)
        if out.embeddings is not None:
            out.embeddings = out.embeddings.clone()
        return out
    return wrapper


class StepSampler:
    """The Sampler over a stepper factory: KV-cached sampling of every row, `batch_size`
    rows at a time. make_stepper: (model, *, capacity) -> stepper (transformers' forward
    by default: the plain reference sampler); loop_context: model -> context manager the
    loop runs in (the lean sampler sets torch's threads there). Reads the live model, so
    `sync_weights` has nothing to do."""

    streams_stops = True  # sample() takes on_stop (the multi-turn loop starts tools early)

    def __init__(self, model, tokenizer, eos_ids, pad_id: int, *,
                 make_stepper: StepperFactory = TransformersStepper,
                 loop_context: Callable | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids, self.pad_id = set(eos_ids), pad_id
        self.make_stepper = make_stepper
        self.loop_context = loop_context

    @sampling_mode
    def sample(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
               generator: torch.Generator | None = None, budgets: Sequence[int] | None = None,
               on_stop: Callable[[int, str, list[int]], None] | None = None) -> GenerationOutput:
        """on_stop(row, reason, tokens), optional: called the moment a row stops."""
        if params.stop_strings and self.tokenizer is None:
            raise ValueError("stop strings need the tokenizer to decode")
        n = len(prompt_ids)
        budgets = list(budgets) if budgets is not None else [params.max_new_tokens] * n
        bs = params.batch_size if params.batch_size > 0 else max(1, n)
        if keyed(generator) and len(generator) != n:
            raise ValueError(f"keyed sampling: {len(generator)} row streams for {n} rows")
        ctx = self.loop_context(self.model) if self.loop_context is not None else contextlib.nullcontext()
        with ctx:
            parts = [decode_chunk(self.model, prompt_ids[s:s + bs], budgets[s:s + bs], eos_ids=self.eos_ids,
                                  pad_id=self.pad_id, temperature=params.temperature, top_p=params.top_p,
                                  generator=generator.take(range(s, min(n, s + bs))) if keyed(generator)
                                  else generator, stop_strings=params.stop_strings, tokenizer=self.tokenizer,
                                  return_embeddings=params.return_embeddings, make_stepper=self.make_stepper,
                                  on_stop=None if on_stop is None else
                                  (lambda i, r, t, _s=s: on_stop(_s + i, r, t)))
                     for s in range(0, n, bs)]
        return concat_outputs(parts)

    def sync_weights(self, model) -> None:
        """Nothing to copy: the stepper reads the live model's weights."""


def generate(model, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int, eos_ids: set[int],
             pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
             generator: torch.Generator | None = None, stop_strings: Sequence[str] = (), tokenizer=None,
             batch_size: int = 0, return_embeddings: bool = False) -> GenerationOutput:
    """Sample a completion for every prompt (ids already tokenized) with transformers'
    forward: the plain reference sampler as one call (`StepSampler` underneath)."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            stop_strings=tuple(stop_strings), batch_size=batch_size,
                            return_embeddings=return_embeddings)
    return StepSampler(model, tokenizer, eos_ids, pad_id).sample(prompt_ids, params, generator=generator)


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


def decode_chunk(model, contexts: Sequence[Sequence[int]], budgets: Sequence[int], *, eos_ids, pad_id, temperature,
                 top_p, generator, stop_strings, tokenizer, return_embeddings: bool,
                 make_stepper: StepperFactory = TransformersStepper,
                 on_stop: Callable[[int, str, list[int]], None] | None = None) -> GenerationOutput:
    """The sampling loop behind `StepSampler`: KV-cached
    sampling of up to budgets[i] new tokens after contexts[i]. A row stops at EOS, a stop
    string or its budget; on_stop(row, reason, tokens) is called the moment it does (so a
    tool call can start while the other rows go on), and the row leaves the cache."""
    was_training = model.training
    model.eval()
    n = len(contexts)
    tokens_out: list[list[int]] = [[] for _ in range(n)]
    logps_out: list[list[float]] = [[] for _ in range(n)]
    reason = ["length"] * n
    live = [j for j in range(n) if budgets[j] > 0]
    for j in range(n):
        if budgets[j] <= 0 and on_stop is not None:
            on_stop(j, "length", [])
    if not live:
        return GenerationOutput(tokens_out, logps_out, [False] * n, reason, None, 0)
    first = start(model, [contexts[j] for j in live], pad_id=pad_id, new_tokens=max(budgets),
                  return_embeddings=return_embeddings, make_stepper=make_stepper)
    stepper, logits, next_pos = first.stepper, first.logits, first.next_pos  # [B, V], [B]
    calls = 1
    embeddings = None
    if first.embeddings is not None:  # the grouping phase works on the CPU
        embeddings = torch.zeros(n, first.embeddings.shape[1])
        embeddings[torch.tensor(live)] = first.embeddings.cpu()
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=logits.device)
    active = torch.tensor(live)  # original row of each cache row
    max_stop = max((len(s) for s in stop_strings), default=0)
    last_chars = {s[-1] for s in stop_strings}
    end_char: dict[int, str] = {}  # token id -> last character of its text (stop-string pre-check)

    for _ in range(max(budgets)):
        rng = generator.take(active.tolist()) if keyed(generator) else generator  # keyed: the live rows' streams
        tok, lp = sample_next(logits, temperature=temperature, top_p=top_p, generator=rng)  # [B], [B]
        tok_l, lp_l = tok.tolist(), lp.tolist()
        done_l = (torch.isin(tok, eos) if len(eos) else torch.zeros_like(tok, dtype=torch.bool)).tolist()  # [B]
        for j, row in enumerate(active.tolist()):
            tokens_out[row].append(tok_l[j])
            logps_out[row].append(lp_l[j])
            if done_l[j]:
                reason[row] = "eos"
            elif stop_strings:
                # Stop strings are matched on the end of the text: only when this token's text
                # ends with a stop string's last character, and then on a short decoded tail.
                t = tok_l[j]
                if t not in end_char:
                    end_char[t] = tokenizer.decode([t], skip_special_tokens=False)[-1:]
                if end_char[t] in last_chars:
                    tail = tokenizer.decode(tokens_out[row][-(max_stop + 8):], skip_special_tokens=False)
                    hit = next((s for s in stop_strings if tail.endswith(s)), None)
                    if hit is not None:
                        reason[row] = f"stop:{hit}"
                        done_l[j] = True
            if not done_l[j] and len(tokens_out[row]) >= budgets[row]:
                done_l[j] = True  # reason stays "length"
            if done_l[j] and on_stop is not None:
                on_stop(row, reason[row], tokens_out[row])
        keep = [j for j, d in enumerate(done_l) if not d]
        if not keep:
            break
        if len(keep) < len(done_l):
            keep_t = torch.tensor(keep, dtype=torch.long)
            active = active[keep_t]
            keep_t = keep_t.to(tok.device)
            stepper.select(keep_t)
            next_pos, tok = next_pos[keep_t], tok[keep_t]
        logits = stepper.step(tok, next_pos)
        calls += 1
        next_pos = next_pos + 1
    if was_training:
        model.train()
    return GenerationOutput(tokens_out, logps_out, [r != "length" for r in reason], reason, embeddings, calls)
