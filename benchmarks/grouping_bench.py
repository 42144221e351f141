"""Time Phase 2 + Phase 3 (group formation and advantages) at 4,096 completions per step.

    python benchmarks/grouping_bench.py [--prompts 512] [--generations 8] [--hidden 896] [--repeats 5]

Synthetic experience shaped like a real step: P prompts x G completions, context
embeddings of width H (896 = Qwen2.5-0.5B, 3584 = Qwen2.5-7B) drawn around 16 topics,
0/1 rewards from per-prompt success rates, a `steps` field of 2 to 4 items, and for
the temporal replay case a rollout batch of 256 tokens per row. Each strategy is run
for a warm-up step and then `repeats` steps; the median wall time per step is
reported, split into grouping (Phase 2) and advantages (Phase 3), next to the time a
step's generation takes at a given throughput, for scale: the grouping phase must be
a small fraction of it.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from grpokit.algo.advantages import group_advantages
from grpokit.algo.hierarchical import allocate_samples
from grpokit.grouping import Groups, make_grouper
from grpokit.types import Experience, RolloutBatch

STRATEGIES: list[tuple[str, dict]] = [
    ("prompt", {}),
    ("batch", {}),
    ("semantic", {}),
    ("semantic k=64", {"spec": "semantic", "clusters": 64}),
    ("adaptive", {}),
    ("reward", {}),
    ("complexity", {}),
    ("multiscale (tuned weights)", {"spec": "multiscale"}),
    ("multiscale + shrink", {"spec": "multiscale", "shrink": True, "weights": [1.0, 0.5, 0.25]}),
    ("prompt + shrink", {"spec": "prompt", "shrink": True}),
    ("temporal window=4", {"spec": "temporal", "window": 4}),
    ("temporal window=4 + replay", {"spec": "temporal", "window": 4, "replay": True}),
    ("prompt + budget", {"spec": "prompt", "budget": 1.0}),
]


def synthetic_step(step: int, prompts: int, gens: int, hidden: int, seq: int, with_rollout: bool) -> Experience:
    g = torch.Generator().manual_seed(step)
    pid = torch.arange(prompts) + (step % 3) * prompts // 2  # some prompts come back in later steps
    topics = torch.randn(16, hidden, generator=torch.Generator().manual_seed(0))
    topic = pid % 16
    emb_p = topics[topic] + 0.3 * torch.randn(prompts, hidden, generator=g)  # [P, H]
    rate = torch.rand(prompts, generator=g)  # [P]
    rows = pid.repeat_interleave(gens)  # [N]
    rewards = (torch.rand(rows.numel(), generator=g) < rate.repeat_interleave(gens)).float()
    fields = [{"steps": ["x"] * (2 + int(p) % 3)} for p in rows.tolist()]
    rollout = None
    if with_rollout:
        n = rows.numel()
        ids = torch.randint(0, 1000, (n, seq), generator=g)
        mask = torch.zeros(n, seq)
        mask[:, seq // 4:] = 1
        rollout = RolloutBatch(input_ids=ids, attention_mask=torch.ones(n, seq, dtype=torch.long), loss_mask=mask,
                               logprobs=-torch.rand(n, seq, generator=g) * mask, prompt_len=seq // 4,
                               completion_ids=[[1]] * n, completions=[""] * n,
                               example_index=torch.arange(n), finished=torch.ones(n, dtype=torch.bool))
    return Experience(prompt_ids=rows, rewards=rewards, step=step, fields=fields,
                      embeddings=emb_p.repeat_interleave(gens, dim=0), lengths=torch.full((rows.numel(),), 200),
                      prompts=[f"prompt {p}" for p in rows.tolist()],
                      prompt_lengths=torch.full((rows.numel(),), 40), rollout=rollout)


def run(args) -> list[tuple[str, float, float]]:
    torch.set_num_threads(args.threads)
    results = []
    for name, opts in STRATEGIES:
        opts = dict(opts)
        spec = opts.pop("spec", name)
        grouper = make_grouper(spec, num_generations=args.generations, seed=0, **opts)
        replay = bool(opts.get("replay"))
        t_group, t_adv = [], []
        for step in range(1, args.repeats + 2 + (4 if spec == "temporal" else 0)):
            exp = synthetic_step(step, args.prompts, args.generations, args.hidden, args.seq, replay)
            t0 = time.perf_counter()
            out = grouper(exp)
            t1 = time.perf_counter()
            if isinstance(out, Groups):
                logp_now = out.replay.logprobs if out.replay is not None else None
                adv = out.advantages(exp.rewards, group_advantages, scale="group", eps=1e-4, logp_now=logp_now)
                if out.replay is not None:
                    out.training_batch(exp.rollout)
            else:
                adv = group_advantages(exp.rewards, out, scale="group", eps=1e-4)
            t2 = time.perf_counter()
            assert torch.isfinite(adv).all()
            if step > 1 + (4 if spec == "temporal" else 0):  # warm-up (and a full window)
                t_group.append(t1 - t0)
                t_adv.append(t2 - t1)
        results.append((name, statistics.median(t_group) * 1e3, statistics.median(t_adv) * 1e3))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--seq", type=int, default=256, help="tokens per row of the replayed rollout batch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen-tokens-per-s", type=float, default=20000.0,
                    help="generation throughput used for the 'share of generation' column")
    ap.add_argument("--gen-len", type=int, default=256, help="completion length for that column")
    args = ap.parse_args()
    n = args.prompts * args.generations
    gen_s = n * args.gen_len / args.gen_tokens_per_s
    print(f"grouping at {n} completions ({args.prompts} prompts x {args.generations}), hidden {args.hidden}, "
          f"{args.threads} CPU thread(s), torch {torch.__version__}")
    print(f"generation for scale: {n} x {args.gen_len} tokens at {args.gen_tokens_per_s:,.0f} tok/s = {gen_s:.1f} s")
    print(f"{'strategy':<30} {'group ms':>9} {'adv ms':>8} {'total ms':>9} {'% of gen':>9}")
    for name, g, a in run(args):
        print(f"{name:<30} {g:9.1f} {a:8.1f} {g + a:9.1f} {100 * (g + a) / 1e3 / gen_s:8.2f}%")
    # the allocator alone (self-tuning sample counts): one call per step
    alpha, beta = torch.rand(args.prompts) * 5 + 0.1, torch.rand(args.prompts) * 5 + 0.1
    t = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        allocate_samples(alpha, beta, n, min_n=2, max_n=2 * args.generations)
        t.append(time.perf_counter() - t0)
    print(f"{'allocate_samples (plan only)':<30} {statistics.median(t) * 1e3:9.1f}")


if __name__ == "__main__":
    main()
