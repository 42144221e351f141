"""Per-prompt success rates at one checkpoint: how wide is a task's difficulty spread?

    python -m grpokit.demos.spread --model DIR [--data task:mixture:test] [--limit 100]
                                   [--samples 8] [--temperature 1.0] [--max-new-tokens 128]
    python -m grpokit.demos.spread --from-samples FILE [--data task:mixture:test]

Samples `--samples` completions of each of the first `--limit` held-out prompts, scores
them with the accuracy reward, and prints (markdown) the distribution of the per-prompt
success rates and their mean per class of the prompts' `family` and `difficulty` fields.
A GRPO group of one prompt carries signal only when its rate is strictly between 0 and 1;
a batch whose rates span 0-90% is the regime where sharing baselines across prompts of
like context or difficulty has something to gain (docs/grouping.md).

--from-samples reads the samples `grpokit eval --samples-out FILE` wrote instead (one
greedy completion per prompt), for accuracy per family and difficulty.
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

EDGES = (0.1, 0.3, 0.5, 0.7, 0.9)  # upper ends of the histogram bins between 0 and 1


@dataclass
class PromptRate:
    id: int
    family: str
    difficulty: object
    rate: float  # share of the prompt's samples scored right


def prompt_rates(ids: Sequence[int], fields: Sequence[dict], correct: Sequence[float]) -> list[PromptRate]:
    """One PromptRate per prompt id, in first-seen order, from one row per sample."""
    hits: dict[int, list[float]] = defaultdict(list)
    info: dict[int, dict] = {}
    for i, f, c in zip(ids, fields, correct):
        hits[i].append(float(c))
        info.setdefault(i, f)
    return [PromptRate(i, str(info[i].get("family", "-")), info[i].get("difficulty", "-"),
                       sum(h) / len(h)) for i, h in hits.items()]


def rate_bin(rate: float) -> str:
    """The histogram bin of a success rate: exactly 0 and exactly 1 (the prompts whose
    group has no signal) apart, (lo, hi] over EDGES between them, then (90, 100)."""
    if rate <= 0.0:
        return "0"
    if rate >= 1.0:
        return "100"
    lo = 0
    for hi in EDGES:
        if rate <= hi:
            return f"({lo:.0f}, {100 * hi:.0f}]"
        lo = 100 * hi
    return "(90, 100)"


def histogram(rates: Sequence[float]) -> list[tuple[str, int]]:
    """(bin, count) for every bin, in order, empty ones included."""
    labels = [rate_bin(r) for r in (0.0, *EDGES, 0.95, 1.0)]
    counts = dict.fromkeys(labels, 0)
    for r in rates:
        counts[rate_bin(r)] += 1
    return list(counts.items())


def report(rates: Sequence[PromptRate], samples: int) -> str:
    """Markdown: the histogram, the share of prompts with signal, and the mean per class."""
    values = [r.rate for r in rates]
    mixed = sum(0.0 < v < 1.0 for v in values)
    lines = [f"{len(rates)} prompts x {samples} samples; per-prompt success rate from {100 * min(values):.0f}% "
             f"to {100 * max(values):.0f}%, mean {100 * statistics.fmean(values):.1f}%; "
             f"{mixed} prompts ({100 * mixed / len(values):.0f}%) between 0 and 100% (a group with signal)", "",
             "| per-prompt success rate (%) | prompts |", "|---|---|"]
    lines += [f"| {label} | {count} |" for label, count in histogram(values)]
    classes: dict[tuple, list[float]] = defaultdict(list)
    for r in rates:
        classes[(r.family, r.difficulty)].append(r.rate)
    ordered = sorted(classes.items(), key=lambda kv: (kv[0][0], str(kv[0][1]).zfill(4)))
    if samples == 1:  # one sample per prompt: each rate is 0 or 1, so min and max say nothing
        lines += ["", "| family | difficulty | prompts | right | accuracy |", "|---|---|---|---|---|"]
        lines += [f"| {f} | {d} | {len(vs)} | {sum(vs):.0f} | {100 * statistics.fmean(vs):.1f}% |"
                  for (f, d), vs in ordered]
        return "\n".join(lines)
    lines += ["", "| family | difficulty | prompts | mean success | min | max |", "|---|---|---|---|---|---|"]
    lines += [f"| {f} | {d} | {len(vs)} | {100 * statistics.fmean(vs):.1f}% | {100 * min(vs):.0f}% | "
              f"{100 * max(vs):.0f}% |" for (f, d), vs in ordered]
    return "\n".join(lines)


def measure(model: str, data: str, *, limit: int, samples: int, temperature: float, max_new_tokens: int,
            seed: int = 0, batch_size: int = 64) -> list[PromptRate]:
    """Sample `samples` completions of each of the first `limit` test prompts of `data`."""
    from grpokit.build import make_sampler
    from grpokit.config.schema import ModelConfig
    from grpokit.evaluate import evaluate_examples
    from grpokit.model.policy import load_policy
    from grpokit.rewards import RewardSet
    from grpokit.tasks.data import load_prompts
    from grpokit.tasks.formats import resolve_system_prompt

    examples = load_prompts(data, split="test", n=limit)
    policy = load_policy(ModelConfig(name_or_path=model))
    result = evaluate_examples(make_sampler(policy.model, policy.tokenizer), policy.tokenizer, examples,
                               RewardSet([("accuracy", 1.0, {})]), max_new_tokens=max_new_tokens,
                               batch_size=batch_size, temperature=temperature, seed=seed,
                               system_prompt=resolve_system_prompt(None, data), num_samples=samples)
    fields = {e.id: e.fields for e in examples}
    ids = [row["id"] for row in result.samples]
    return prompt_rates(ids, [fields[i] for i in ids], [row["reward/accuracy"] for row in result.samples])


def from_samples(path: str, data: str) -> list[PromptRate]:
    """Rates from a `grpokit eval --samples-out` file (one greedy sample per prompt: each
    rate is 0 or 1, so the per-class means are per-family / per-difficulty accuracies)."""
    import json

    from grpokit.tasks.data import load_prompts

    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows or "reward/accuracy" not in rows[0]:
        raise ValueError(f"{path}: expected rows of `grpokit eval --samples-out` with 'reward/accuracy'")
    fields = {e.id: e.fields for e in load_prompts(data, split="test", n=max(r["id"] for r in rows) + 1)}
    return prompt_rates([r["id"] for r in rows], [fields[r["id"]] for r in rows],
                        [r["reward/accuracy"] for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grpokit.demos.spread", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a model directory (grpokit sft / train output)")
    ap.add_argument("--from-samples", metavar="FILE",
                    help="sample nothing: summarise a `grpokit eval --samples-out` file of --data's test split")
    ap.add_argument("--data", default="task:mixture:test")
    ap.add_argument("--limit", type=int, default=100, help="prompts (the first N of the split)")
    ap.add_argument("--samples", type=int, default=8, help="completions per prompt")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.from_samples:
        print(report(from_samples(args.from_samples, args.data), 1))
        return 0
    if not args.model:
        ap.error("give --model (or --from-samples)")
    if args.samples < 1 or args.limit < 1:
        ap.error("--samples and --limit must be >= 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rates = measure(args.model, args.data, limit=args.limit, samples=args.samples, temperature=args.temperature,
                    max_new_tokens=args.max_new_tokens, seed=args.seed)
    print(report(rates, args.samples))
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
