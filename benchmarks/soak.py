"""Soak test: a long CPU GRPO run of the demo model that must not leak.

    python benchmarks/soak.py --prompts 8           # 1,000 steps, ~20 min on 2 cores
    python benchmarks/soak.py                       # the demo's 32 prompts a step: ~75 min
    python benchmarks/soak.py --steps 100 --prompts 8 --out runs/soak   # a shorter check

The demo's GRPO stage (arithmetic task, tiny:s model, 32 prompts x 8 completions of up
to 64 tokens per step; the cold start is skipped: a leak does not care what the weights
are), plus a small reward that is a hash of the text so that every group has a spread
and every step trains, run for --steps steps in this process, through
`train(cfg, hooks=...)`. At step 50 and every --every steps it records, from
/proc/self: resident memory (VmRSS), open file descriptors, threads, and child
processes. It fails (exit 1) when resident memory grew more than --max-growth (10%) over
its step-50 value, or when descriptors, threads or child processes exceed their step-50
counts by more than --slack (2: a thread pool started lazily, once) or grow at all in
the second half of the samples. Results go to
OUT/soak.json and a table on stdout. Not a timed test; run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children() -> int:
    """Live processes whose parent is this one (zombies included: they leak too)."""
    me, n = str(os.getpid()), 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited while we looked
            n += fields[1] == me  # fields: state, ppid, ...
    return n


def thread_names() -> dict[str, int]:
    names: dict[str, int] = {}
    for t in Path("/proc/self/task").iterdir():
        try:
            name = (t / "comm").read_text().strip()
        except OSError:
            continue
        names[name] = names.get(name, 0) + 1
    return dict(sorted(names.items()))


def sample(step: int, t0: float) -> dict:
    return {"step": step, "seconds": round(time.perf_counter() - t0, 1), "rss_mib": round(rss_mib(), 1),
            "fds": len(os.listdir("/proc/self/fd")), "threads": len(os.listdir("/proc/self/task")),
            "children": children(), "thread_names": thread_names()}


def text_noise(completion: str, **_) -> float:
    """A reward in [0, 1) that is a fixed function of the text: equal texts score equally."""
    return zlib.crc32(completion.encode()) % 1000 / 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=100, help="sample every N steps (and at step 50)")
    ap.add_argument("--baseline", type=int, default=50, help="step whose sample is the reference")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (default: the demo's 32)")
    ap.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth over the baseline")
    ap.add_argument("--slack", type=int, default=2,
                    help="descriptors/threads/children a run may add after the baseline once (a pool started "
                         "lazily); a leak also fails the no-growth-in-the-second-half rule")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/soak")
    args = ap.parse_args(argv)

    from grpokit.config.schema import RewardSpec
    from grpokit.demos.demo import DemoSettings, grpo_config
    from grpokit.train import train

    s = DemoSettings()
    cfg = grpo_config(s, args.seed, Path(s.model), Path(args.out) / "run")
    cfg.run.steps, cfg.run.eval_every, cfg.run.progress, cfg.run.overwrite = args.steps, 0, False, True
    cfg.data.eval_size = 50
    # The untrained model rarely gets an answer right, so most groups would score all zero and
    # skip the update. A small deterministic noise term (a hash of the text) gives every group
    # a spread without a direction to learn (a length term collapsed the completions to one
    # token within 90 steps), so every step runs the training passes and the optimizer.
    cfg.rewards = [*cfg.rewards, RewardSpec(name=text_noise, weight=0.1)]
    if args.prompts:
        cfg.rollout.prompts_per_step = args.prompts
    samples: list[dict] = []
    t0 = time.perf_counter()

    class Hooks:
        def on_step(self, step, metrics, batch):
            if step == args.baseline or step % args.every == 0 or step == args.steps:
                samples.append(sample(step, t0))
                print(json.dumps(samples[-1]), flush=True)

    samples.append(sample(0, t0))
    train(cfg, hooks=Hooks())
    samples.append({**sample(args.steps, t0), "step": "end"})

    base = next((r for r in samples if r["step"] == args.baseline), None)
    problems = []
    if base is not None:
        later = [r for r in samples if isinstance(r["step"], int) and r["step"] > args.baseline]
        for r in later:
            if r["rss_mib"] > base["rss_mib"] * (1 + args.max_growth):
                problems.append(f"step {r['step']}: RSS {r['rss_mib']} MiB > {1 + args.max_growth:.2f} x "
                                f"{base['rss_mib']} MiB (step {args.baseline})")
            for key in ("fds", "threads", "children"):
                if r[key] > base[key] + args.slack:
                    problems.append(f"step {r['step']}: {key} {r[key]} > {base[key]} + {args.slack} at step "
                                    f"{args.baseline}")
        # A leak keeps growing: the second half of the run may add nothing at all.
        if len(later) >= 2:
            mid, end = later[(len(later) - 1) // 2], later[-1]
            for key in ("fds", "threads", "children"):
                if end[key] > mid[key]:
                    problems.append(f"{key} still growing: {mid[key]} at step {mid['step']}, {end[key]} at step "
                                    f"{end['step']}")
    else:
        problems.append(f"the run ended before step {args.baseline}; nothing to compare")
    result = {"steps": args.steps, "prompts_per_step": cfg.rollout.prompts_per_step,
              "load_average": os.getloadavg(), "cpus": os.cpu_count(), "samples": samples, "problems": problems}
    out = Path(args.out) / "soak.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'step':>6} {'s':>8} {'RSS MiB':>9} {'fds':>4} {'threads':>7} {'children':>8}")
    for r in samples:
        print(f"{r['step']!s:>6} {r['seconds']:>8} {r['rss_mib']:>9} {r['fds']:>4} {r['threads']:>7} {r['children']:>8}")
    print("\n" + ("OK: no growth beyond the limits" if not problems else "FAILED:\n  " + "\n  ".join(problems)))
    print(f"written {out}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
