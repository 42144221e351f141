"""Held-out evaluation: greedy (or sampled) completions scored by the reward functions."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from grpokit.config.schema import EvalConfig
from grpokit.model.policy import encode_prompts, render_prompt
from grpokit.types import Example, Sampler, SamplingParams

ACCURACY_REWARDS = ("accuracy", "exact_match")


@dataclass
class EvalResult:
    accuracy: float | None  # fraction in [0, 1], from the accuracy-like reward
    reward_means: dict[str, float]
    mean_length: float  # completion tokens
    n: int
    seconds: float
    samples: list[dict] = field(default_factory=list)
    # k -> mean over examples of the unbiased pass@k estimate (several samples per example only)
    pass_at: dict[int, float] = field(default_factory=dict)

    def format_report(self) -> str:
        lines = [f"examples: {self.n}"]
        if self.accuracy is not None:
            lines.append(f"accuracy: {100 * self.accuracy:.1f}%")
        for k, v in self.pass_at.items():
            lines.append(f"pass@{k}: {100 * v:.1f}%")
        for k, v in self.reward_means.items():
            lines.append(f"reward {k}: {v:.4f}")
        lines.append(f"mean completion length: {self.mean_length:.1f} tokens")
        lines.append(f"time: {self.seconds:.1f} s")
        return "\n".join(lines)


def accuracy_key(names: Sequence[str]) -> str | None:
    return next((n for n in names if n in ACCURACY_REWARDS), None)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k completions drawn without replacement from n
    sampled ones (c of them right) is right: 1 - C(n-c, k) / C(n, k), the unbiased
    estimator of Chen et al. (2021). Computed as a product, so large n does not overflow."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def evaluate_examples(sampler: Sampler, tokenizer, examples: Sequence[Example], rewards, *, max_new_tokens: int,
                      batch_size: int = 64, temperature: float = 0.0, seed: int = 0, max_prompt_tokens: int = 0,
                      system_prompt: str | None = None, chat_template: str = "auto",
                      num_samples: int = 1) -> EvalResult:
    """Sample `num_samples` completions per example (one by default) and score each with
    every reward. sampler: the policy's Sampler (build.py; the multi-turn tool loop with
    tools). With several samples, accuracy is the mean over all of them (pass@1) and
    `pass_at` holds pass@1 and pass@num_samples."""
    start = time.perf_counter()
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    distinct = examples
    examples = [e for e in examples for _ in range(num_samples)]  # copies next to each other, each its own draw
    prompts = [e.prompt for e in examples]
    ids = encode_prompts(tokenizer, prompts, max_tokens=max_prompt_tokens, system_prompt=system_prompt,
                         chat_template=chat_template)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size)
    gen = sampler.sample(ids, params, generator=torch.Generator().manual_seed(seed))
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in gen.completion_ids]
    scores = rewards.score(prompts, texts, [e.fields for e in examples], completion_ids=gen.completion_ids)
    means = {k: float(v.mean()) for k, v in scores.per_reward.items()}
    key = accuracy_key(list(scores.per_reward))
    lengths = [len(c) for c in gen.completion_ids]
    samples = []
    for i, e in enumerate(examples):
        row = {"id": e.id, "prompt": render_prompt(tokenizer, e.prompt, system_prompt, chat_template),
               "completion": texts[i],
               "reward": float(scores.total[i]), "length": lengths[i], "stop": gen.stop_reason[i]}
        if num_samples > 1:
            row["sample"] = i % num_samples
        row.update({f"reward/{k}": float(v[i]) for k, v in scores.per_reward.items()})
        samples.append(row)
    pass_at: dict[int, float] = {}
    if key and num_samples > 1 and distinct:
        # a completion counts as right when its accuracy reward is 1 (the rewards give 0 or 1)
        right = (scores.per_reward[key].reshape(len(distinct), num_samples) >= 1.0).sum(1).tolist()
        pass_at = {k: sum(pass_at_k(num_samples, int(c), k) for c in right) / len(distinct)
                   for k in sorted({1, num_samples})}
    return EvalResult(accuracy=means[key] if key else None, reward_means=means,
                      mean_length=sum(lengths) / max(1, len(lengths)), n=len(distinct),
                      seconds=time.perf_counter() - start, samples=samples, pass_at=pass_at)


def evaluate(cfg: EvalConfig) -> EvalResult:
    """`grpokit eval`: load the model and data named in the config and report."""
    from grpokit.build import make_sampler
    from grpokit.tasks.data import load_prompts
    from grpokit.optim import set_threads
    from grpokit.model.limits import check_prompt_lengths
    from grpokit.model.policy import is_tiny, load_policy
    from grpokit.rewards import RewardSet
    from grpokit.tasks.formats import resolve_system_prompt

    set_threads(cfg.threads)
    if cfg.num_samples > 1 and cfg.temperature <= 0:
        raise ValueError(f"num_samples={cfg.num_samples} needs temperature > 0: greedy decoding gives the same "
                         "completion every time")
    if is_tiny(cfg.model.name_or_path):
        raise ValueError("eval needs a trained model directory; 'tiny' would be a fresh random model")
    examples = load_prompts(cfg.data, split="test")
    if cfg.limit:
        examples = examples[: cfg.limit]
    rewards = RewardSet([(r.name, r.weight, r.kwargs) for r in cfg.rewards])
    rewards.check_examples(examples, f"data {cfg.data!r}")  # before the model loads
    policy = load_policy(cfg.model)
    check_prompt_lengths(policy.model, policy.tokenizer, examples, max_prompt_tokens=0,
                         max_new_tokens=cfg.max_new_tokens, source=f"data {cfg.data!r}", new_tokens_key="max_new_tokens")
    result = evaluate_examples(make_sampler(policy.model, policy.tokenizer), policy.tokenizer, examples, rewards, max_new_tokens=cfg.max_new_tokens,
                               batch_size=cfg.batch_size, temperature=cfg.temperature, seed=cfg.seed,
                               system_prompt=resolve_system_prompt(cfg.system_prompt, cfg.data),
                               chat_template=cfg.chat_template, num_samples=cfg.num_samples)
    if cfg.samples_out:
        path = Path(cfg.samples_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for row in result.samples:
                f.write(json.dumps(row) + "\n")
    return result
