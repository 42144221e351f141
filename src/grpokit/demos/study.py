"""`grpokit study grouping`: does context-aware grouping save samples? Measured, not claimed.

    grpokit study grouping [--seeds 0 1 2] [--strategies grpo,semantic,...] [--out DIR]
    grpokit study grouping --quick          # a smoke test: seconds, numbers mean nothing
    (the command line: grpokit.demos.study_cli, which also has `gradient` and `forgetting`)

For each seed, one cold-start model (supervised on reasoning traces, as in `grpokit
demo`) is trained once and shared by every strategy, so runs of one seed differ only
by their grouping. Each strategy then trains with GRPO under the same sample budget
(the completions plain GRPO samples in --steps steps; a strategy that samples fewer
completions per step runs more steps), with greedy held-out accuracy measured every
--eval-every steps' worth of samples. Results:

    DIR/study.md     the table: final accuracy (mean +- sd over seeds), completions
                     needed to reach plain GRPO's final accuracy (same seed), and that
                     as a share of GRPO's budget (the target: <= 60%)
    DIR/study.png    held-out accuracy against completions sampled (mean over seeds)
    DIR/study.json   every curve
    DIR/<task>/seed<S>/<strategy>/   the runs themselves (metrics.jsonl, ...)

Runs already finished (their result.json exists) are reused, so a long study can be
run in pieces or extended with more seeds.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from grpokit.demos.demo import DemoSettings

# name -> (config overrides, share of GRPO's completions sampled per step)
STRATEGIES: dict[str, tuple[list[str], float]] = {
    "grpo": ([], 1.0),
    "semantic": (["algorithm.grouping=semantic"], 1.0),
    "adaptive": (["algorithm.grouping=adaptive"], 1.0),
    "reward": (["algorithm.grouping=reward"], 1.0),
    "complexity": (["algorithm.grouping=complexity"], 1.0),
    "temporal": (["algorithm.grouping=temporal", "algorithm.group.base=semantic"], 1.0),
    "temporal-replay": (["algorithm.grouping=temporal", "algorithm.group.base=semantic",
                         "algorithm.group.replay=true"], 1.0),
    "multiscale": (["algorithm.grouping=multiscale"], 1.0),
    "multiscale-shrink": (["algorithm.grouping=multiscale", "algorithm.group.shrink=true"], 1.0),
    "shrink": (["algorithm.group.shrink=true"], 1.0),
    "budget-0.6": (["algorithm.group.budget=0.6"], 0.6),
    "budget-0.6-shrink": (["algorithm.group.budget=0.6", "algorithm.group.shrink=true"], 0.6),
    "budget-0.6-multiscale": (["algorithm.grouping=multiscale", "algorithm.group.shrink=true",
                               "algorithm.group.budget=0.6"], 0.6),
    # DAPO's dynamic sampling: prompts whose rewards have no spread are dropped and refilled;
    # every completion sampled, kept or dropped, counts against the budget
    "dynamic": (["algorithm.dynamic_sampling=true"], 1.0),
}


@dataclass
class StudySettings:
    """The GRPO side of the study; the cold start is the demo's (grpokit.demos.demo.DemoSettings)."""

    task: str = "arithmetic"
    model: str = "tiny:s"
    steps: int = 60  # GRPO steps of the baseline; the sample budget is steps x prompts x generations
    prompts: int = 32
    generations: int = 8
    # GRPO as in the demo, whose recipe docs/demo.md measured
    lr: float = DemoSettings.grpo_lr
    temperature: float = 0.7  # the study's results were measured at 0.7 (the demo samples at 1.0)
    warmup: int = DemoSettings.grpo_warmup
    schedule: str = DemoSettings.grpo_schedule
    max_new_tokens: int = DemoSettings.max_new_tokens
    eval_every: int = 5  # baseline steps between held-out evaluations
    eval_size: int = 200
    pass_k: int = 0  # > 0: the final model also gets k samples per held-out problem at the GRPO temperature (pass@k)
    cold_stop: float = 0.2  # the cold start stops at the first probe check reaching this (0.05: a sparse-reward start)
    threads: int = 2
    extra: list = field(default_factory=list)  # overrides applied to every GRPO run
    quick_cold_start: bool = False

    @classmethod
    def quick(cls) -> "StudySettings":
        return cls(model="tiny:xs", steps=3, prompts=4, generations=4, max_new_tokens=32, eval_every=1,
                   eval_size=16, quick_cold_start=True)

    @property
    def budget(self) -> int:
        return self.steps * self.prompts * self.generations

    def cold_settings(self) -> DemoSettings:
        # The cold start docs/grouping.md measured: the demo's stage 1 on 20,000 traces with
        # the single-evaluation stop rule (the demo itself now trains on fewer traces, for
        # its control arm, for a fixed number of steps; see docs/demo.md): a check every 50
        # steps, capped at 2,200.
        base = DemoSettings.quick() if self.quick_cold_start else DemoSettings(
            sft_traces=20000, sft_max_steps=2200, sft_eval_every=50, sft_probe_size=100, sft_stop_at=self.cold_stop,
            sft_stop_window=1, control=False)
        return dataclasses.replace(base, model=self.model, max_new_tokens=self.max_new_tokens,
                                   eval_size=self.eval_size, threads=self.threads)


# ----------------------------------------------------------------------------- running


def cold_start(s: StudySettings, seed: int, out: Path) -> tuple[Path, float]:
    """The seed's cold-start model (the demo's stage 1, trained once, then reused by
    every strategy) and its held-out accuracy."""
    done = out / "cold_start.json"
    if done.is_file():
        info = json.loads(done.read_text())
        return Path(info["model"]), float(info["accuracy"])
    from grpokit.demos.demo import cold_start as demo_cold_start

    res = demo_cold_start(s.cold_settings(), seed, out / "model", task_name=s.task, progress=False)
    done.write_text(json.dumps({"model": str(res.model_dir), "accuracy": res.accuracy,
                                "sft_steps": len(res.history), "seconds": res.seconds}))
    return res.model_dir, res.accuracy


def run_strategy(s: StudySettings, name: str, seed: int, model_dir: Path, out: Path) -> dict:
    """Train one strategy from the cold start; returns its curve [(completions, accuracy)]."""
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    from grpokit.config.schema import TrainConfig
    from grpokit.config import load_config, validate
    from grpokit.logging import read_metrics
    from grpokit.tasks import task_spec
    from grpokit.train import train

    overrides, share = STRATEGIES[name]
    steps = math.ceil(s.steps / share)
    eval_every = max(1, round(s.eval_every / share))
    per_step = s.prompts * s.generations
    cfg = load_config(TrainConfig, None, [
        f"model.name_or_path={model_dir}", f"data.train=task:{s.task}", f"data.eval={task_spec(s.task, 'test')}",
        f"data.eval_size={s.eval_size}", f"rollout.num_generations={s.generations}",
        f"rollout.prompts_per_step={s.prompts}", f"rollout.max_new_tokens={s.max_new_tokens}",
        f"rollout.temperature={s.temperature}", "algorithm.preset=grpo", f"optim.lr={s.lr}",
        f"optim.warmup_steps={min(s.warmup, s.steps)}", f"optim.schedule={s.schedule}",
        f"run.out={out}", f"run.steps={steps}", f"run.seed={seed}", f"run.threads={s.threads}",
        f"run.eval_every={eval_every}", f"run.max_completions={s.budget}", "run.eval_before=false", "run.progress=false", "run.log_samples=2", "run.keep_checkpoints=1",
        "run.overwrite=true",  # a strategy without result.json is rerun whole (a partial run is moved aside)
        *overrides, *s.extra])
    problems = validate(cfg)
    if problems:
        raise ValueError(f"study strategy {name!r}: " + "; ".join(problems))
    t0 = time.perf_counter()
    train(cfg)
    rows = read_metrics(out / "metrics.jsonl")
    samples, curve = 0, []
    for r in rows:
        # every completion sampled (dynamic sampling's dropped ones too); older runs lack the count
        samples = int(r["completions_total"]) if "completions_total" in r else samples + int(
            r.get("grouping/samples", per_step))
        if "eval/accuracy" in r:
            curve.append((samples, float(r["eval/accuracy"])))
        if samples >= s.budget:
            break
    result = {"strategy": name, "seed": seed, "curve": curve, "seconds": time.perf_counter() - t0,
              "steps": len(rows)}
    if s.pass_k > 0:
        result.update(sampled_eval(s, out / "model", seed))
    done.write_text(json.dumps(result))
    return result


def signal_stats(rows: list[dict], per_step: int, budget: int) -> dict:
    """How much of the run had something to learn from (the sparse-reward question), over
    the steps within the budget: the share of steps where any completion was right, the
    share where any row had a nonzero advantage (was trained), and the trained rows as a
    share of the completions sampled."""
    steps = []
    for r in rows:
        steps.append(r)
        if r.get("completions_total", 0) >= budget:
            break
    steps = [r for r in steps if "trained_rows" in r]
    if not steps:
        return {}
    n = len(steps)
    # completions sampled in those steps (dynamic sampling's dropped ones too); older logs lack the count
    sampled = steps[-1].get("completions_total", n * per_step)
    return {"steps_with_a_right_answer": sum(r.get("accuracy", 0.0) > 0 for r in steps) / n,
            "steps_with_signal": sum(r["trained_rows"] > 0 for r in steps) / n,
            "trained_row_share": sum(r["trained_rows"] for r in steps) / sampled}


def evaluate_saved(model_dir: Path, task: str, n: int, max_new_tokens: int, *, temperature: float = 0.0,
                   seed: int = 0, num_samples: int = 1):
    """A saved model on the first n test problems of a task, scored by the task's rewards
    (greedy by default): grpokit.evaluate's EvalResult."""
    from grpokit.build import make_sampler
    from grpokit.config.schema import ModelConfig
    from grpokit.evaluate import evaluate_examples
    from grpokit.model.policy import load_policy
    from grpokit.rewards import RewardSet
    from grpokit.tasks import get_task

    t = get_task(task)
    policy = load_policy(ModelConfig(name_or_path=str(model_dir)))
    return evaluate_examples(make_sampler(policy.model, policy.tokenizer), policy.tokenizer, t.prompts("test", n),
                             RewardSet([(name, w, {}) for name, w in t.default_rewards]),
                             max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                             num_samples=num_samples)


def sampled_eval(s: StudySettings, model_dir: Path, seed: int) -> dict:
    """pass@1 and pass@k of the final model: k samples of each held-out problem at the GRPO
    temperature (greedy accuracy alone hides a policy that got right more often but not
    on its most likely answer, or the reverse)."""
    res = evaluate_saved(model_dir, s.task, s.eval_size, s.max_new_tokens, temperature=s.temperature, seed=seed,
                         num_samples=s.pass_k)
    return {"pass_at": {str(k): v for k, v in res.pass_at.items()}, "pass_k": s.pass_k}


def study_grouping(s: StudySettings, seeds: Sequence[int], strategies: Sequence[str], out: Path, *,
                   report_only: bool = False) -> dict:
    """Run what is missing (or, with report_only, only gather the finished runs) and
    write the table, the plot and the JSON."""
    import torch

    from grpokit.demos.study_table import markdown, paired, plot, summarise  # matplotlib: only when reporting

    torch.set_num_threads(s.threads)
    results, cold = [], {}
    for seed in seeds:
        base = out / s.task / f"seed{seed}"
        if report_only:
            done = base / "cold_start" / "cold_start.json"
            if not done.is_file():
                print(f"seed {seed}: no finished cold start, left out", flush=True)
                continue
            model_dir, cold[seed] = None, float(json.loads(done.read_text())["accuracy"])
        else:
            model_dir, cold[seed] = cold_start(s, seed, base / "cold_start")
        print(f"seed {seed}: cold start accuracy {100 * cold[seed]:.1f}%", flush=True)
        for name in strategies:
            if report_only:
                if not (base / name / "result.json").is_file():
                    print(f"  {name:<22} not run", flush=True)
                    continue
            r = run_strategy(s, name, seed, model_dir, base / name)
            metrics = base / name / "metrics.jsonl"
            if metrics.is_file():  # the learning signal, read from the run's own log when the table is made
                from grpokit.logging import read_metrics

                r["signal"] = signal_stats(read_metrics(metrics), s.prompts * s.generations, s.budget)
            last = r["curve"][-1] if r["curve"] else (0, float("nan"))
            print(f"  {name:<22} final accuracy {100 * last[1]:5.1f}% after {last[0]:,} completions "
                  f"({r['seconds']:.0f} s)", flush=True)
            results.append(r)
    rows = summarise(results, cold, s.budget, s.eval_size)
    pairs = paired(results, cold, s.budget)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.md").write_text(markdown(rows, s, cold, list(cold), pairs, results))
    plot(results, out / "study.png", s.budget, cold)
    (out / "study.json").write_text(json.dumps({"settings": s.__dict__, "cold_start": cold, "rows": rows,
                                                "paired": pairs, "runs": results}, indent=1))
    print((out / "study.md").read_text())
    return {"rows": rows, "results": results}
