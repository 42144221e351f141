"""Test helper: one call that samples through the plain or the lean Sampler with
generate()'s keyword arguments (the tests compare the two samplers on the same rows)."""
from __future__ import annotations

from grpokit.rollout.generate import StepSampler
from grpokit.types import SamplingParams


def sample(model, prompts, *, lean: bool, max_new_tokens: int, eos_ids, pad_id: int, generator=None, tokenizer=None,
           cuda_graphs: bool = True, stop_strings=(), **params):
    if lean:
        from grpokit.engine.stepper import lean_sampler

        sampler = lean_sampler(model, tokenizer, eos_ids, pad_id, cuda_graphs=cuda_graphs)
    else:
        sampler = StepSampler(model, tokenizer, eos_ids, pad_id)
    p = SamplingParams(max_new_tokens=max_new_tokens, stop_strings=tuple(stop_strings), **params)
    return sampler.sample(prompts, p, generator=generator)
