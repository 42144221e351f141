"""`grpokit study grouping`: does context-aware grouping save samples? Measured, not claimed.

    python -m grpokit.demos.study grouping [--seeds 0 1 2] [--strategies grpo,semantic,...] [--out DIR]
    python -m grpokit.demos.study grouping --quick          # a smoke test: seconds, numbers mean nothing
    python -m grpokit.demos.study gradient [--model DIR] ... # the estimator itself (grpokit.demos.gradient)
    python -m grpokit.demos.study forgetting --study DIR ... # a second family after GRPO (grpokit.demos.forgetting)

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

import argparse
import dataclasses
import json
import math
import statistics
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
BASELINE = "grpo"
TARGET_SHARE = 0.6


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
    temperature: float = DemoSettings.grpo_temperature
    warmup: int = DemoSettings.grpo_warmup
    schedule: str = DemoSettings.grpo_schedule
    max_new_tokens: int = DemoSettings.max_new_tokens
    eval_every: int = 5  # baseline steps between held-out evaluations
    eval_size: int = 200
    pass_k: int = 0  # > 0: the final model also gets k samples per held-out problem at the GRPO temperature (pass@k)
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
        # its control arm; see docs/demo.md).
        base = DemoSettings.quick() if self.quick_cold_start else DemoSettings(
            sft_traces=20000, sft_probe_size=100, sft_stop_at=0.2, sft_stop_window=1, control=False)
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


def sampled_eval(s: StudySettings, model_dir: Path, seed: int) -> dict:
    """pass@1 and pass@k of the final model: k samples of each held-out problem at the GRPO
    temperature (greedy accuracy alone hides a policy that got right more often but not
    on its most likely answer, or the reverse)."""
    from grpokit.build import make_sampler
    from grpokit.config.schema import ModelConfig
    from grpokit.evaluate import evaluate_examples
    from grpokit.model.policy import load_policy
    from grpokit.rewards import RewardSet
    from grpokit.tasks import get_task

    task = get_task(s.task)
    examples = task.prompts("test", s.eval_size)
    policy = load_policy(ModelConfig(name_or_path=str(model_dir)))
    res = evaluate_examples(make_sampler(policy.model, policy.tokenizer), policy.tokenizer, examples,
                            RewardSet([(n, w, {}) for n, w in task.default_rewards]),
                            max_new_tokens=s.max_new_tokens, temperature=s.temperature, seed=seed,
                            num_samples=s.pass_k)
    return {"pass_at": {str(k): v for k, v in res.pass_at.items()}, "pass_k": s.pass_k}


# ----------------------------------------------------------------------------- summary


def samples_to_reach(curve: Sequence[Sequence[float]], target: float) -> float | None:
    """Completions sampled at the first evaluation whose accuracy >= target (None if never)."""
    for samples, acc in curve:
        if acc >= target - 1e-9:
            return float(samples)
    return None


def summarise(results: list[dict], cold: dict[int, float], budget: int) -> list[dict]:
    """One row per strategy: final accuracy and samples to reach GRPO's final accuracy (per seed)."""
    by = {(r["strategy"], r["seed"]): r for r in results}
    # GRPO's final accuracy per seed is the target; a seed where GRPO did not beat its own
    # cold start has no meaningful target and is left out of the comparison.
    target = {seed: by[(BASELINE, seed)]["curve"][-1][1] for (name, seed) in by
              if name == BASELINE and by[(BASELINE, seed)]["curve"]
              and by[(BASELINE, seed)]["curve"][-1][1] > cold.get(seed, 0.0)}
    rows = []
    for name in dict.fromkeys(r["strategy"] for r in results):
        finals, reach = [], []
        seeds = sorted(seed for (n, seed) in by if n == name)
        for seed in seeds:
            curve = by[(name, seed)]["curve"]
            finals.append(curve[-1][1] if curve else float("nan"))
            if seed in target:
                reach.append(samples_to_reach([(0, cold.get(seed, 0.0))] + [tuple(c) for c in curve], target[seed]))
        got = [x for x in reach if x is not None]
        paired = [seed for seed in seeds if (BASELINE, seed) in by and by[(name, seed)]["curve"]
                  and by[(BASELINE, seed)]["curve"]]
        lift = [_mean_accuracy(by[(name, seed)]["curve"], cold.get(seed, 0.0))
                - _mean_accuracy(by[(BASELINE, seed)]["curve"], cold.get(seed, 0.0)) for seed in paired]
        mean_reach = _mean_curve_reach([by[(name, seed)]["curve"] for seed in seeds if seed in target],
                                       [cold.get(seed, 0.0) for seed in seeds if seed in target],
                                       [target[seed] for seed in seeds if seed in target])
        rows.append({
            "strategy": name, "seeds": len(seeds),
            "final_mean": statistics.fmean(finals), "final_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "reached": len(got), "compared": len(reach),
            "samples_to_grpo_final": statistics.fmean(got) if got else None,
            "share_of_grpo_budget": (statistics.fmean(got) / budget) if got else None,
            "mean_curve_samples": mean_reach,
            "mean_curve_share": None if mean_reach is None else mean_reach / budget,
            "auc_lift": statistics.fmean(lift) if lift else None,
            "auc_lift_se": statistics.stdev(lift) / len(lift) ** 0.5 if len(lift) > 1 else None,
        })
    return rows


# two-sided 95% quantiles of Student's t, by degrees of freedom (few seeds: the normal 1.96 is too narrow)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def paired_ci(diffs: Sequence[float]) -> tuple[float, float, float] | None:
    """Mean of per-seed paired differences and its 95% t interval; None with under 2 seeds."""
    if len(diffs) < 2:
        return None
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
    df = len(diffs) - 1
    t = _T975[max(k for k in _T975 if k <= df)] if df <= 30 else 1.96  # rounded down df: a wider interval
    return mean, mean - t * se, mean + t * se


def accuracy_at(curve: Sequence[Sequence[float]], samples: float, cold: float) -> float:
    """Held-out accuracy at the last evaluation made with at most `samples` completions
    (the cold start's when none was)."""
    acc = cold
    for n, a in curve:
        if n <= samples + 1e-9:
            acc = a
    return acc


def paired(results: list[dict], cold: dict[int, float], budget: int) -> list[dict]:
    """Per strategy, per-seed differences to GRPO on the same seed (the same cold start):
    final greedy accuracy, greedy accuracy after TARGET_SHARE of the budget minus GRPO's
    final (>= 0 in a seed means the strategy reached GRPO's result with that share), and
    pass@1 / pass@k of the final models when measured."""
    by = {(r["strategy"], r["seed"]): r for r in results}
    out = []
    for name in dict.fromkeys(r["strategy"] for r in results):
        if name == BASELINE:
            continue
        seeds = sorted(seed for (n, seed) in by if n == name and (BASELINE, seed) in by
                       and by[(name, seed)]["curve"] and by[(BASELINE, seed)]["curve"])
        row: dict = {"strategy": name, "seeds": seeds}
        g = {seed: by[(BASELINE, seed)] for seed in seeds}
        m = {seed: by[(name, seed)] for seed in seeds}
        row["final"] = [m[x]["curve"][-1][1] - g[x]["curve"][-1][1] for x in seeds]
        row["at_share"] = [accuracy_at(m[x]["curve"], TARGET_SHARE * budget, cold.get(x, 0.0))
                           - g[x]["curve"][-1][1] for x in seeds]
        for key in ("1", None):
            have = [x for x in seeds if "pass_at" in m[x] and "pass_at" in g[x]]
            if not have:
                continue
            k = key or str(m[have[0]]["pass_k"])
            row[f"pass@{k}"] = [m[x]["pass_at"][k] - g[x]["pass_at"][k] for x in have]
        out.append(row)
    return out


def paired_markdown(rows: list[dict]) -> list[str]:
    keys = [k for k in ("final", "at_share") if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r if k.startswith("pass@")}, key=lambda k: int(k[5:]))
    names = {"final": "final greedy accuracy",
             "at_share": f"greedy accuracy after {int(TARGET_SHARE * 100)}% of the budget minus GRPO's final"}
    lines = ["", "Paired differences to GRPO on the same seed, in points: mean [95% t interval]; per seed in "
                 "brackets.", "",
             "| strategy | " + " | ".join(names.get(k, f"{k} (final model, sampled)") for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            d = r.get(k)
            if not d:
                cells.append("-")
                continue
            ci = paired_ci(d)
            per = ", ".join(f"{100 * x:+.1f}" for x in d)
            cells.append((f"{100 * ci[0]:+.1f} [{100 * ci[1]:+.1f}, {100 * ci[2]:+.1f}]" if ci else
                          f"{100 * d[0]:+.1f}") + f" ({per})")
        lines.append(f"| {r['strategy']} | " + " | ".join(cells) + " |")
    return lines


def _mean_accuracy(curve: Sequence[Sequence[float]], cold: float) -> float:
    """Held-out accuracy averaged over the run's evaluations, the cold start included: the
    area under the accuracy curve per evaluation, a sample-efficiency summary that uses
    every evaluation rather than the first crossing of a threshold."""
    return statistics.fmean([cold] + [acc for _, acc in curve])


def _mean_curve_reach(curves: list, colds: list[float], targets: list[float]) -> float | None:
    """Completions at which the strategy's accuracy, averaged over the given seeds, first
    reaches GRPO's final accuracy averaged over the same seeds. Averaging before comparing
    is less at the mercy of one lucky or unlucky evaluation than the per-seed count."""
    curves = [[(0, c)] + [tuple(p) for p in curve] for curve, c in zip(curves, colds) if curve]
    if not curves or len(curves) != len(targets):
        return None
    n = min(len(c) for c in curves)
    mean = [(statistics.fmean(c[i][0] for c in curves), statistics.fmean(c[i][1] for c in curves)) for i in range(n)]
    return samples_to_reach(mean, statistics.fmean(targets))


def markdown(rows: list[dict], s: StudySettings, cold: dict[int, float], seeds: Sequence[int],
             pairs: list[dict] | None = None) -> str:
    cold_mean = statistics.fmean(cold.values()) if cold else float("nan")
    lines = [
        f"# Grouping strategies on `{s.task}`: held-out accuracy per completion sampled",
        "",
        f"Model {s.model}, cold start to {100 * cold_mean:.1f}% held-out accuracy (mean over seeds "
        f"{', '.join(map(str, seeds))}); GRPO budget {s.budget:,} completions ({s.steps} steps x {s.prompts} "
        f"prompts x {s.generations}); greedy accuracy on {s.eval_size} held-out problems every "
        f"{s.eval_every * s.prompts * s.generations:,} completions.",
        "",
        "| strategy | seeds run | final accuracy (mean +- sd) | completions to reach GRPO's final accuracy | "
        "share of GRPO's budget | seeds reaching it | mean curve reaches GRPO's mean final at | "
        "mean accuracy over the run minus GRPO's (paired, +- se) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reach = "not reached" if r["samples_to_grpo_final"] is None else f"{r['samples_to_grpo_final']:,.0f}"
        share = "-" if r["share_of_grpo_budget"] is None else f"{100 * r['share_of_grpo_budget']:.0f}%"
        mean = ("not reached" if r.get("mean_curve_samples") is None
                else f"{r['mean_curve_samples']:,.0f} ({100 * r['mean_curve_share']:.0f}%)")
        lift = "-" if r.get("auc_lift") is None else f"{100 * r['auc_lift']:+.1f}"
        if r.get("auc_lift_se") is not None:
            lift += f" +- {100 * r['auc_lift_se']:.1f}"
        lines.append(f"| {r['strategy']} | {r['seeds']} | {100 * r['final_mean']:.1f}% +- {100 * r['final_sd']:.1f} | "
                     f"{reach} | {share} | {r['reached']}/{r['compared']} | {mean} | {lift} |")
    winners = [r["strategy"] for r in rows if r["strategy"] != BASELINE and r["share_of_grpo_budget"] is not None
               and r["share_of_grpo_budget"] <= TARGET_SHARE and r["reached"] == r["compared"] > 0]
    mean_winners = [r["strategy"] for r in rows if r["strategy"] != BASELINE and r.get("mean_curve_share") is not None
                    and r["mean_curve_share"] <= TARGET_SHARE]
    compared = max((r["compared"] for r in rows), default=0)
    if compared < len(seeds):
        lines += ["", f"{len(seeds) - compared} of {len(seeds)} seeds are left out of the comparison: GRPO did not "
                      "end above its cold-start accuracy there, so there is no target to reach."]
    lines += ["", "Completions to reach GRPO's final accuracy are per seed (the same cold start), averaged over "
                  "the seeds that reached it; GRPO's own row shows how early its noisy curve first touches its "
                  "final value. The mean-curve column averages first: the strategy's accuracy curve over its "
                  "seeds against GRPO's final accuracy over the same seeds. The last column is the area under "
                  "the accuracy curve (accuracy averaged over every evaluation, cold start included) minus "
                  "GRPO's on the same seed, averaged over seeds, in points.",
              f"Target: reach GRPO's final accuracy with <= {int(TARGET_SHARE * 100)}% of its completions, in "
              f"every seed. Met by: {', '.join(winners) if winners else 'none'}. On the mean curve over "
              f"seeds: {', '.join(mean_winners) if mean_winners else 'none'}."]
    if pairs:
        lines += paired_markdown(pairs)
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path, budget: int, cold: dict[int, float]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in dict.fromkeys(r["strategy"] for r in results):
        curves = [[(0, cold.get(r["seed"], 0.0))] + [tuple(c) for c in r["curve"]]
                  for r in results if r["strategy"] == name and r["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        xs = [statistics.fmean(c[i][0] for c in curves) for i in range(n)]
        ys = [100 * statistics.fmean(c[i][1] for c in curves) for i in range(n)]
        ax.plot(xs, ys, marker="o", markersize=3, label=name, linewidth=2.2 if name == BASELINE else 1.2)
        if name == BASELINE:
            ax.axhline(ys[-1], color="grey", linestyle="--", linewidth=1)
    ax.axvline(TARGET_SHARE * budget, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("completions sampled")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"mean over seeds; dashed: GRPO's final accuracy, dotted: {int(TARGET_SHARE * 100)}% of its budget",
                 fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def study_grouping(s: StudySettings, seeds: Sequence[int], strategies: Sequence[str], out: Path, *,
                   report_only: bool = False) -> dict:
    """Run what is missing (or, with report_only, only gather the finished runs) and
    write the table, the plot and the JSON."""
    import torch

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
            last = r["curve"][-1] if r["curve"] else (0, float("nan"))
            print(f"  {name:<22} final accuracy {100 * last[1]:5.1f}% after {last[0]:,} completions "
                  f"({r['seconds']:.0f} s)", flush=True)
            results.append(r)
    rows = summarise(results, cold, s.budget)
    pairs = paired(results, cold, s.budget)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.md").write_text(markdown(rows, s, cold, list(cold), pairs))
    plot(results, out / "study.png", s.budget, cold)
    (out / "study.json").write_text(json.dumps({"settings": s.__dict__, "cold_start": cold, "rows": rows,
                                                "paired": pairs, "runs": results}, indent=1))
    print((out / "study.md").read_text())
    return {"rows": rows, "results": results}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="grpokit study", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("grouping", help="every grouping strategy under the same sample budget")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at least 3 for a real study")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated, from: {', '.join(STRATEGIES)} (grpo is always included)")
    p.add_argument("--out", default="runs/study-grouping")
    p.add_argument("--task", default="arithmetic")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (the numbers mean nothing)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: summarise the runs already finished under --out")
    for name, typ in (("steps", int), ("prompts", int), ("generations", int), ("eval_every", int),
                      ("eval_size", int), ("pass_k", int), ("threads", int), ("model", str), ("lr", float)):
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, help=f"default: {getattr(StudySettings(), name)}")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every GRPO run")
    from grpokit.demos import forgetting, gradient

    gradient.add_parser(sub)
    forgetting.add_parser(sub)
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.what == "forgetting":
        return forgetting.run_from(args)
    if args.what == "gradient":
        gs = gradient.settings_from(args, ap.error)

        def gradient_cold_start() -> Path:
            model_dir, acc = cold_start(StudySettings(task=gs.task, threads=gs.threads), gs.seed,
                                        Path(args.out) / "cold_start")
            print(f"cold start: {model_dir} ({100 * acc:.1f}% held-out accuracy)", flush=True)
            return model_dir

        gradient.run(gs, Path(args.out), cold_start=gradient_cold_start)
        return 0
    s = StudySettings.quick() if args.quick else StudySettings()
    s.task = args.task
    for name in ("steps", "prompts", "generations", "eval_every", "eval_size", "pass_k", "threads", "model", "lr"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    s.extra = list(args.overrides)
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        ap.error(f"unknown strategy {unknown[0]!r}; valid: {', '.join(STRATEGIES)}")
    if BASELINE not in names:
        names.insert(0, BASELINE)
    if len(args.seeds) < 3 and not args.quick:
        print("note: fewer than 3 seeds; the table will not say much about noise", flush=True)
    study_grouping(s, args.seeds, names, Path(args.out), report_only=args.report_only)
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
