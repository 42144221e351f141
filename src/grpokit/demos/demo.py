"""`grpokit demo`: the DeepSeek-R1 pipeline in miniature, on a laptop CPU.

Stage 1 (cold start): a fresh tiny model is fine-tuned on arithmetic reasoning traces
with annotated steps, and stopped on purpose once it is partly right. Stage 2: GRPO
with rule-based rewards (answer, format, step correctness) from that checkpoint,
through the same `grpokit train` code path a real model uses. Both stages are
measured on the same held-out problems with greedy decoding.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from grpokit.config.schema import AlgorithmConfig, DataConfig, ModelConfig, OptimConfig, RolloutConfig, RunConfig, TrainConfig



@dataclass
class DemoSettings:
    """The demo's recipe; tuned so both stages fit in the time budget on 2 cores."""

    model: str = "tiny:s"
    sft_traces: int = 20000
    sft_batch: int = 32
    sft_lr: float = 5e-4
    # Constant LR, stopped early: a cosine-annealed cold start sits in a sharp minimum
    # that the first noisy RL updates knock it out of (held-out accuracy fell from 28%
    # to under 5% in our runs); a model stopped mid-training keeps learning under GRPO.
    sft_schedule: str = "constant"
    sft_max_steps: int = 2200  # a cap; the stop rule below normally ends the stage first
    sft_eval_every: int = 50
    sft_probe_size: int = 100  # held-out problems (disjoint from the reported ones) for the stop rule
    sft_stop_at: float | None = 0.2  # stop once the probe accuracy reaches this: partly right on purpose
    grpo_steps: int = 90
    grpo_prompts: int = 32
    grpo_generations: int = 8
    grpo_lr: float = 1e-4
    grpo_warmup: int = 10
    grpo_schedule: str = "cosine"  # decays to 0 at the last step, which keeps what was gained
    grpo_temperature: float = 0.7
    max_new_tokens: int = 64
    eval_size: int = 200  # held-out problems, greedy decoding
    threads: int = 2

    @classmethod
    def quick(cls) -> "DemoSettings":
        """A smoke-test size: seconds, not minutes; the numbers mean nothing."""
        return cls(model="tiny:xs", sft_traces=400, sft_max_steps=20, sft_eval_every=10, sft_probe_size=10,
                   sft_stop_at=None, grpo_steps=3, grpo_prompts=4, grpo_generations=4, max_new_tokens=48, eval_size=20)


@dataclass
class ColdStart:
    model_dir: Path
    accuracy: float  # greedy, on the reported held-out problems
    history: list[dict]  # one row per SFT step (loss, lr; probe accuracy when measured)
    seconds: float


def cold_start(s: DemoSettings, seed: int, out: Path, *, task_name: str = "arithmetic", progress: bool = True,
               desc: str = "stage 1: cold start (SFT)") -> ColdStart:
    """Stage 1: a fresh tiny model, supervised on the task's annotated traces until the
    probe accuracy reaches s.sft_stop_at (or s.sft_max_steps), saved to `out`."""
    from grpokit.build import make_sampler
    from grpokit.checkpoint import save_model
    from grpokit.evaluate import evaluate_examples
    from grpokit.model.policy import create_tiny
    from grpokit.rewards import RewardSet
    from grpokit.sft import sft_loop
    from grpokit.tasks import get_task

    t0 = time.perf_counter()
    task = get_task(task_name)
    traces = task.traces(s.sft_traces, seed=seed)
    # The stop rule looks at its own held-out problems, not at the reported ones.
    test = task.prompts("test", s.eval_size + s.sft_probe_size)
    heldout, probe = test[: s.eval_size], test[s.eval_size:]
    rewards = RewardSet([(n, w, {}) for n, w in task.default_rewards])
    torch.manual_seed(seed)
    fit = [t.completion for t in traces[:2000]] + [t.prompt for t in traces[:2000]]
    model, tok = create_tiny(s.model, fit, seed=seed)

    sampler = make_sampler(model, tok)

    def accuracy(examples) -> float:
        res = evaluate_examples(sampler, tok, examples, rewards, max_new_tokens=s.max_new_tokens, seed=seed)
        return float(res.accuracy)

    history = sft_loop(model, tok, traces, steps=s.sft_max_steps, batch_size=s.sft_batch, lr=s.sft_lr,
                       warmup_steps=min(50, s.sft_max_steps // 10), schedule=s.sft_schedule, seed=seed,
                       eval_fn=lambda: accuracy(probe), eval_every=s.sft_eval_every, stop_at=s.sft_stop_at,
                       progress=progress, desc=desc)
    save_model(out, model, tok, {"stage": "cold_start", "seed": seed})
    return ColdStart(out, accuracy(heldout), history, time.perf_counter() - t0)


def grpo_config(s: DemoSettings, seed: int, model_dir: Path, out: Path) -> TrainConfig:
    """Stage 2's recipe, as `grpokit train` would read it from a YAML file."""
    return TrainConfig(
        model=ModelConfig(name_or_path=str(model_dir)),
        data=DataConfig(train="task:arithmetic", eval="task:arithmetic:test", eval_size=s.eval_size),
        rollout=RolloutConfig(num_generations=s.grpo_generations, prompts_per_step=s.grpo_prompts,
                              max_new_tokens=s.max_new_tokens, temperature=s.grpo_temperature),
        algorithm=AlgorithmConfig(preset="grpo"),
        optim=OptimConfig(lr=s.grpo_lr, warmup_steps=min(s.grpo_warmup, s.grpo_steps), schedule=s.grpo_schedule),
        run=RunConfig(out=str(out), steps=s.grpo_steps, seed=seed, threads=s.threads,
                      eval_every=max(1, s.grpo_steps // 4), log_samples=4,
                      eval_before=False,  # the cold start's held-out accuracy is the "before"
                      overwrite=True),  # a rerun of the demo redoes both stages (old one moved aside)
    )


def run_demo(seed: int = 0, out: str | None = None, quick: bool = False, settings: DemoSettings | None = None) -> dict:
    from grpokit.logging import RunLogger, read_metrics
    from grpokit.plotting import plot_stages
    from grpokit.train import train

    s = settings or (DemoSettings.quick() if quick else DemoSettings())
    t_start = time.perf_counter()
    torch.set_num_threads(s.threads)
    run_dir = Path(out or f"runs/demo-seed{seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"grpokit demo: arithmetic reasoning, seed {seed}, run directory {run_dir}", flush=True)

    cold = cold_start(s, seed, run_dir / "cold_start")
    history, acc_cold = cold.history, cold.accuracy
    with RunLogger(run_dir / "sft_log", console=False) as lg:
        for row in history:
            lg.log_step(row["step"], row)
    print(f"accuracy after cold start: {100 * acc_cold:.1f}%", flush=True)
    t_cold = time.perf_counter() - t_start

    # Stage 2: GRPO through the regular training entry point
    cfg = grpo_config(s, seed, cold.model_dir, run_dir / "grpo")
    grpo_dir = train(cfg)
    grpo_rows = read_metrics(grpo_dir / "metrics.jsonl")
    acc_grpo = next(r["eval/accuracy"] for r in reversed(grpo_rows) if "eval/accuracy" in r)
    wall = time.perf_counter() - t_start

    # One shared "held-out accuracy" panel across both stages; loss and reward per stage.
    sft_rows = [{"step": r["step"], "SFT loss": r["loss"], **({"held-out accuracy": r["accuracy"]} if "accuracy" in r else {})}
                for r in history]
    # The cold-start panel shows the stop rule's probe; GRPO's starts from the cold-start
    # model's accuracy on the reported problems (step 0), so its gain reads off the plot.
    rl_rows = [{"step": 0, "held-out accuracy": acc_cold}] + [
        {"step": r["step"], "GRPO reward": r["reward"],
         **({"held-out accuracy": r["eval/accuracy"]} if "eval/accuracy" in r else {})} for r in grpo_rows]
    plot = plot_stages([("cold start (SFT)", sft_rows), ("GRPO", rl_rows)], run_dir / "demo.png",
                       keys=("held-out accuracy", "SFT loss", "GRPO reward"))
    rewards_seen = [r["reward"] for r in grpo_rows]
    k = max(1, len(rewards_seen) // 10)
    summary = {
        "seed": seed, "eval_size": s.eval_size, "accuracy_cold_start": acc_cold, "accuracy_grpo": acc_grpo, "sft_steps": len(history),
        "grpo_steps": len(grpo_rows), "reward_first": sum(rewards_seen[:k]) / k,
        "reward_last": sum(rewards_seen[-k:]) / k, "seconds_cold_start": t_cold, "seconds_total": wall,
        "run_dir": str(run_dir), "plot": str(plot),
    }
    _print_table(summary)
    import json

    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _print_table(s: dict) -> None:
    lines = [
        "",
        "=" * 56,
        f"grpokit demo: held-out accuracy ({s['eval_size']} problems, greedy)",
        "-" * 56,
        f"accuracy after cold start: {100 * s['accuracy_cold_start']:.1f}%",
        f"accuracy after GRPO: {100 * s['accuracy_grpo']:.1f}%",
        f"change: {100 * (s['accuracy_grpo'] - s['accuracy_cold_start']):+.1f} points",
        f"reward (mean of first/last 10% of GRPO steps): {s['reward_first']:.3f} -> {s['reward_last']:.3f}",
        f"steps: {s['sft_steps']} cold start, {s['grpo_steps']} GRPO",
        f"wall time: {s['seconds_total'] / 60:.1f} min (cold start {s['seconds_cold_start'] / 60:.1f} min)",
        f"run directory: {s['run_dir']}",
        f"plot: {s['plot']}",
        "=" * 56,
    ]
    print("\n".join(lines), flush=True)
