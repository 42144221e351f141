"""`grpokit demo`: the DeepSeek-R1 pipeline in miniature, on a laptop CPU.

Stage 1 (cold start): a fresh tiny model is fine-tuned on arithmetic reasoning traces
with annotated steps for a fixed number of steps, partly right on purpose. Stage 2: GRPO
with rule-based rewards (answer, format, step correctness) from that checkpoint,
through the same `grpokit train` code path a real model uses. Control: the cold
start's own SFT run continued for GRPO's budget instead (demos/control.py). All three
are measured on the same held-out problems with greedy decoding.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from grpokit.config.schema import AlgorithmConfig, DataConfig, ModelConfig, OptimConfig, RolloutConfig, RunConfig, TrainConfig
from grpokit.sft import SFTRun


@dataclass
class DemoSettings:
    """The demo's recipe; tuned so both stages fit in the time budget on 2 cores."""

    model: str = "tiny:s"
    # Few annotated traces, as in R1 (thousands of traces against far more RL prompts), while
    # GRPO learns from the task's 20,000 prompts with answers and no traces. On 20,000 traces
    # SFT alone kept climbing past 55%; on 1,000 it levels off near 30-35% at a constant rate,
    # but the annealed control still gains as much as GRPO (docs/demo.md, section 4).
    sft_traces: int = 1000
    sft_batch: int = 32
    sft_lr: float = 5e-4
    # Constant LR, stopped early: a cosine-annealed cold start sits in a sharp minimum
    # that the first noisy RL updates knock it out of (held-out accuracy fell from 28%
    # to under 5% in our runs); a model stopped mid-training keeps learning under GRPO.
    sft_schedule: str = "constant"
    # A fixed length, not a threshold on probe accuracy: a threshold hinges on greedy answers
    # that one rounding change flips, and a seed whose curve creeps (seed 1: 18% at step 1,000,
    # about 25% at 2,200) ran on to a cap, twice the time. On 1,000 traces every seed measured
    # has passed its steep climb by step 1,000 (docs/demo.md).
    sft_max_steps: int = 1000
    sft_eval_every: int = 100  # the probe's curve, for the plot (and the stop rule when one is set)
    sft_probe_size: int = 300  # held-out problems (disjoint from the reported ones)
    sft_stop_at: float | None = None  # a probe accuracy that ends the stage early; off (see above)
    sft_stop_window: int = 2  # ... as the mean of this many consecutive probe evaluations
    grpo_steps: int = 90  # 60 left GRPO within noise of the control (seed 0; docs/demo.md)
    grpo_prompts: int = 32
    grpo_generations: int = 8
    grpo_lr: float = 1e-4
    grpo_warmup: int = 10
    grpo_schedule: str = "cosine"  # decays to 0 at the last step, which keeps what was gained
    # 1.0, not 0.7: on three seeds GRPO ended 0.3 to 3.2 points higher and moved from 0.2-3.9
    # behind its annealed control to 0.1-1.5 ahead; at 0.7 about 40% of groups held eight equal
    # rewards and taught nothing, at 1.0 about 26% (docs/demo.md, section 4c)
    grpo_temperature: float = 1.0
    max_new_tokens: int = 64
    eval_size: int = 1000  # held-out problems, greedy decoding: a standard error of about 1.5 points
    control: bool = True  # also train the cold start on with SFT for GRPO's budget (demos/control.py)
    # The control decays its rate to 0 over GRPO's token budget, as GRPO's stage does: at the
    # cold start's constant rate its readings swing by up to 6 points between nearby steps,
    # and the annealed control is the stronger one (seed 0: 43.1% against 33.4%; docs/demo.md).
    control_anneal: bool = True
    control_points: int = 2  # evaluations along the control's curve, besides its two budget points
    threads: int = 2

    @classmethod
    def quick(cls) -> "DemoSettings":
        """A smoke-test size: seconds, not minutes; the numbers mean nothing."""
        return cls(model="tiny:xs", sft_traces=400, sft_max_steps=20, sft_eval_every=10, sft_probe_size=10,
                   sft_stop_at=None, grpo_steps=3, grpo_prompts=4, grpo_generations=4, max_new_tokens=48, eval_size=20,
                   control_points=1)


@dataclass
class ColdStart:
    model_dir: Path
    accuracy: float  # greedy, on the reported held-out problems
    history: list[dict]  # one row per SFT step (loss, lr; probe accuracy when measured)
    seconds: float
    sft: SFTRun | None = None  # the run itself, to be continued by the control arm
    evaluate: Callable[[], float] | None = None  # greedy accuracy on the reported held-out problems, live model


def cold_start(s: DemoSettings, seed: int, out: Path, *, task_name: str = "arithmetic", progress: bool = True,
               desc: str = "stage 1: cold start (SFT)") -> ColdStart:
    """Stage 1: a fresh tiny model, supervised on the task's annotated traces for
    `sft_max_steps` (or until the stop rule, `probe_stop`, ends it when one is set),
    saved to `out`."""
    from grpokit.build import make_sampler
    from grpokit.checkpoint import save_model
    from grpokit.evaluate import evaluate_examples
    from grpokit.model.policy import create_tiny
    from grpokit.rewards import RewardSet
    from grpokit.tasks import get_task

    t0 = time.perf_counter()
    task = get_task(task_name)
    # The tokenizer's alphabet comes from a fixed sample of the task's text, however few
    # traces the cold start trains on.
    sample = task.traces(2000, seed=seed)
    traces = sample[: s.sft_traces] if s.sft_traces <= len(sample) else task.traces(s.sft_traces, seed=seed)
    # The stop rule looks at its own held-out problems, not at the reported ones.
    test = task.prompts("test", s.eval_size + s.sft_probe_size)
    heldout, probe = test[: s.eval_size], test[s.eval_size:]
    rewards = RewardSet([(n, w, {}) for n, w in task.default_rewards])
    torch.manual_seed(seed)
    fit = [t.completion for t in sample] + [t.prompt for t in sample]
    model, tok = create_tiny(s.model, fit, seed=seed)

    sampler = make_sampler(model, tok)

    def accuracy(examples) -> float:
        res = evaluate_examples(sampler, tok, examples, rewards, max_new_tokens=s.max_new_tokens, seed=seed)
        return float(res.accuracy)

    run = SFTRun(model, tok, traces, total_steps=s.sft_max_steps, batch_size=s.sft_batch, lr=s.sft_lr,
                 warmup_steps=min(50, s.sft_max_steps // 10), schedule=s.sft_schedule, seed=seed)
    history = run.run(s.sft_max_steps, eval_fn=lambda: accuracy(probe), eval_every=s.sft_eval_every,
                      stop=probe_stop(s), progress=progress, desc=desc)
    save_model(out, model, tok, {"stage": "cold_start", "seed": seed})
    return ColdStart(out, accuracy(heldout), history, time.perf_counter() - t0, sft=run,
                     evaluate=lambda: accuracy(heldout))


def probe_stop(s: DemoSettings) -> Callable[[list[dict]], bool] | None:
    """The cold start's stop rule: the mean of the last `sft_stop_window` probe accuracies
    reaches `sft_stop_at`. One flipped greedy answer moves the mean of two checks of 300
    problems by 0.17 points (one check of 100: by a whole point), so where the stage ends
    no longer hinges on a single answer that rounding can flip."""
    if s.sft_stop_at is None:
        return None
    window = max(1, s.sft_stop_window)

    def stop(history: list[dict]) -> bool:
        accs = [r["accuracy"] for r in history if "accuracy" in r][-window:]
        return len(accs) == window and sum(accs) / window >= s.sft_stop_at

    return stop


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


def run_demo(seed: int = 0, out: str | None = None, quick: bool = False, settings: DemoSettings | None = None,
             *, threads: int | None = None, control: bool | None = None, control_anneal: bool | None = None) -> dict:
    """Both stages (and the control arm unless `control` is False); threads, control and
    control_anneal, when given, override the settings."""
    import json

    from grpokit.demos.control import control_arm, grpo_budget, plot_demo
    from grpokit.logging import RunLogger, read_metrics
    from grpokit.train import train

    s = settings or (DemoSettings.quick() if quick else DemoSettings())
    s = overridden(s, threads=threads, control=control, control_anneal=control_anneal)
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
    budget = grpo_budget(grpo_rows, s.grpo_prompts * s.grpo_generations)

    # The control: the cold start's own SFT run continued for GRPO's budget instead
    control = None
    if s.control:
        control = control_arm(cold.sft, budget, cold.evaluate, points=s.control_points, log_dir=run_dir / "control",
                              anneal=s.control_anneal)
    wall = time.perf_counter() - t_start

    plot = plot_demo(run_dir / "demo.png", history, grpo_rows, acc_cold, control)
    rewards_seen = [r["reward"] for r in grpo_rows]
    k = max(1, len(rewards_seen) // 10)
    summary = {
        "seed": seed, "eval_size": s.eval_size, "accuracy_cold_start": acc_cold, "accuracy_grpo": acc_grpo,
        "sft_steps": len(history), "sft_traces": s.sft_traces,
        "grpo_steps": len(grpo_rows), "reward_first": sum(rewards_seen[:k]) / k,
        "reward_last": sum(rewards_seen[-k:]) / k, "grpo_train_seconds": budget.seconds,
        "grpo_sampled_tokens": budget.tokens,
        "seconds_cold_start": t_cold, "seconds_total": wall, "cpu": cpu_model(), "threads": s.threads,
        "run_dir": str(run_dir), "plot": str(plot),
    }
    if control is not None:
        summary.update(control.summary("accuracy"))
    _print_table(summary)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def overridden(settings, **given):
    """`settings` (a demo's settings dataclass) with the fields given a value other than
    None replaced: the command line's overrides, None meaning "the demo's own"."""
    return dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None})


def cpu_model() -> str:
    """The CPU's model name and the vector instructions torch's kernels use on it,
    recorded with every demo result: rounding, and so the exact numbers, differ between
    CPUs, and two machines sold under one name ("AMD EPYC") can differ in the kernels
    torch picks (AVX2 or AVX-512)."""
    import platform

    from grpokit.bench.machine import cpu_name

    return with_capability(cpu_name() or platform.machine(), _kernel_capability())


def with_capability(name: str, capability: str | None) -> str:
    """`name (capability)`, the capability as torch reports it ("AVX512" -> "AVX-512")."""
    if not capability:
        return name
    shown = {"AVX512": "AVX-512"}.get(capability, capability)
    return f"{name} ({shown})"


def _kernel_capability() -> str | None:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # older torch, or a build without the query
        return None


def _print_table(s: dict) -> None:
    from grpokit.demos.control import control_lines

    pct = lambda key: f"{100 * s[key]:.1f}%"  # noqa: E731
    gain = lambda key: f"{100 * (s[key] - s['accuracy_cold_start']):+.1f}"  # noqa: E731
    lines = [
        "",
        "=" * 72,
        f"grpokit demo: held-out accuracy ({s['eval_size']} problems, greedy)",
        "-" * 72,
        f"accuracy after cold start: {pct('accuracy_cold_start')} ({s['sft_steps']} SFT steps on {s['sft_traces']} traces)",
        f"accuracy after GRPO: {pct('accuracy_grpo')} ({gain('accuracy_grpo')} points; {s['grpo_steps']} steps, "
        f"{s['grpo_train_seconds'] / 60:.1f} min of training, {s['grpo_sampled_tokens']} sampled tokens)",
    ]
    lines += control_lines(s, "held-out accuracy", "accuracy")
    lines += [
        f"reward (mean of first/last 10% of GRPO steps): {s['reward_first']:.3f} -> {s['reward_last']:.3f}",
        f"wall time: {s['seconds_total'] / 60:.1f} min (cold start {s['seconds_cold_start'] / 60:.1f} min); "
        f"CPU: {s['cpu']}, {s['threads']} thread{'s' if s['threads'] != 1 else ''}",
        f"run directory: {s['run_dir']}",
        f"plot: {s['plot']}",
        "=" * 72,
    ]
    print("\n".join(lines), flush=True)
