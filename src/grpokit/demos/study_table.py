"""The grouping study's summary: completions to reach GRPO's final accuracy, paired
per-seed differences with t intervals, the markdown table and the plot (grpokit.demos.study
runs the study; this module only reads its results)."""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

BASELINE = "grpo"  # the strategy every other is compared with
TARGET_SHARE = 0.6  # the target: GRPO's final accuracy with at most this share of its completions


def samples_to_reach(curve: Sequence[Sequence[float]], target: float) -> float | None:
    """Completions sampled at the first evaluation whose accuracy >= target (None if never)."""
    for samples, acc in curve:
        if acc >= target - 1e-9:
            return float(samples)
    return None


def summarise(results: list[dict], cold: dict[int, float], budget: int, n: int = 0) -> list[dict]:
    """One row per strategy: final accuracy and samples to reach GRPO's final accuracy (per
    seed). n: held-out problems per evaluation; given, GRPO's final accuracy must be above
    its cold start's by more than 1.96 standard errors to count as a target."""
    by = {(r["strategy"], r["seed"]): r for r in results}
    # GRPO's final accuracy per seed is the target; a seed where GRPO did not beat its own
    # cold start (beyond the evaluation's noise) has no meaningful target: "reaching" a final
    # accuracy within noise of the start says nothing, and such seeds are left out.
    target = {seed: by[(BASELINE, seed)]["curve"][-1][1] for (name, seed) in by
              if name == BASELINE and by[(BASELINE, seed)]["curve"]
              and above_cold(by[(BASELINE, seed)]["curve"][-1][1], cold.get(seed, 0.0), n)}
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


def difference_se(a: float, b: float, n: int) -> float:
    """The standard error of the difference of two proportions a and b, each measured on
    n problems: sqrt((a(1-a) + b(1-b)) / n)."""
    return math.sqrt((a * (1 - a) + b * (1 - b)) / n)


def above_cold(acc: float, cold: float, n: int, z: float = 1.96) -> bool:
    """Is accuracy acc above the cold start's by more than z standard errors of the
    difference of two proportions measured on n problems each? n = 0: simply above."""
    if n <= 0:
        return acc > cold
    se = difference_se(cold, acc, n)
    return se > 0 and (acc - cold) / se > z


def first_significant_gain(curve: Sequence[Sequence[float]], cold: float, n: int, z: float = 1.96) -> float | None:
    """Completions at the first evaluation whose accuracy is above the cold start's by more
    than z standard errors of the difference of two proportions measured on n problems
    each (None if none is)."""
    for samples, acc in curve:
        if above_cold(acc, cold, n, z):
            return float(samples)
    return None


def signal_markdown(results: list[dict], cold: dict[int, float], n: int, budget: int) -> list[str]:
    """Per strategy, means over seeds: how often a step had a right answer and a trained row,
    the trained rows' share, and the completions to the first significant gain."""
    names = [name for name in dict.fromkeys(r["strategy"] for r in results)
             if any(r.get("signal") for r in results if r["strategy"] == name)]
    if not names:
        return []
    lines = ["", f"Learning signal (steps within the budget, mean over seeds) and the first significant gain: the "
                 f"first evaluation above the cold start by more than 1.96 standard errors ({n} problems each).", "",
             "| strategy | steps with a right answer | steps with a trained row | trained rows per completion | "
             "completions to the first significant gain (seeds reaching it) |", "|---|---|---|---|---|"]
    for name in names:
        rs = [r for r in results if r["strategy"] == name and r.get("signal")]
        sig = {k: statistics.fmean(r["signal"][k] for r in rs) for k in rs[0]["signal"]}
        first = [first_significant_gain(r["curve"], cold.get(r["seed"], 0.0), n) for r in rs]
        got = [x for x in first if x is not None]
        when = (f"{statistics.fmean(got):,.0f} ({100 * statistics.fmean(got) / budget:.0f}% of the budget; "
                f"{len(got)}/{len(rs)})" if got else f"none (0/{len(rs)})")
        lines.append(f"| {name} | {100 * sig['steps_with_a_right_answer']:.0f}% | {100 * sig['steps_with_signal']:.0f}% "
                     f"| {sig['trained_row_share']:.2f} | {when} |")
    return lines


def collapsed(curve: Sequence[Sequence[float]], cold: float, last: int = 2) -> bool:
    """A run that collapsed: its last `last` evaluations are all below its cold start."""
    tail = [acc for _, acc in curve][-last:]
    return len(tail) == last and all(acc < cold for acc in tail)


def stability_markdown(results: list[dict], cold: dict[int, float]) -> list[str]:
    """Per strategy over seeds: the spread of final accuracy, the worst seed's gain over its
    cold start, and the runs that collapsed (ended below the cold start)."""
    names = list(dict.fromkeys(r["strategy"] for r in results))
    lines = ["", "Stability over seeds: final greedy accuracy's spread, the worst seed's change from its cold start, "
                 "and collapses (the last two evaluations below the cold start).", "",
             "| strategy | seeds | final accuracy: sd (min-max) | worst change from the cold start | collapsed |",
             "|---|---|---|---|---|"]
    for name in names:
        rs = [r for r in results if r["strategy"] == name and r["curve"]]
        if not rs:
            continue
        finals = [r["curve"][-1][1] for r in rs]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        worst = min(r["curve"][-1][1] - cold.get(r["seed"], 0.0) for r in rs)
        down = [r["seed"] for r in rs if collapsed(r["curve"], cold.get(r["seed"], 0.0))]
        lines.append(f"| {name} | {len(rs)} | {100 * sd:.1f} ({100 * min(finals):.1f}-{100 * max(finals):.1f}) | "
                     f"{100 * worst:+.1f} | {len(down)}/{len(rs)}" + (f" (seeds {', '.join(map(str, down))})"
                                                                       if down else "") + " |")
    return lines


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
        lines.append(f"| {r['strategy']} | " + " | ".join(ci_cell(r.get(k)) for k in keys) + " |")
    return lines


def ci_cell(diffs: Sequence[float] | None) -> str:
    """A table cell for per-seed paired differences, in points: `mean [95% t interval]
    (each seed's)`; one seed: its value; none: `-`."""
    if not diffs:
        return "-"
    ci = paired_ci(diffs)
    per = ", ".join(f"{100 * x:+.1f}" for x in diffs)
    head = f"{100 * ci[0]:+.1f} [{100 * ci[1]:+.1f}, {100 * ci[2]:+.1f}]" if ci else f"{100 * diffs[0]:+.1f}"
    return f"{head} ({per})"


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


def markdown(rows: list[dict], s, cold: dict[int, float], seeds: Sequence[int],
             pairs: list[dict] | None = None, results: list[dict] | None = None) -> str:
    """The study's table; s: its StudySettings."""
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
    grpo_seeds = ({r["seed"] for r in results if r["strategy"] == BASELINE and r["curve"]} if results is not None
                  else set(seeds))
    no_target = len(grpo_seeds) - compared
    if no_target > 0:
        lines += ["", f"{no_target} of {len(grpo_seeds)} seeds are left out of the comparison: GRPO did not "
                      f"end above its cold-start accuracy there by more than 1.96 standard errors ({s.eval_size} "
                      "problems each), so there is no target to reach."]
    if len(grpo_seeds) < len(seeds):
        lines += ["", f"{len(seeds) - len(grpo_seeds)} of {len(seeds)} seeds have no finished GRPO run yet."]
    lines += ["", "Completions to reach GRPO's final accuracy are per seed (the same cold start), averaged over "
                  "the seeds that reached it; GRPO's own row shows how early its noisy curve first touches its "
                  "final value. The mean-curve column averages first: the strategy's accuracy curve over its "
                  "seeds against GRPO's final accuracy over the same seeds. The last column is the area under "
                  "the accuracy curve (accuracy averaged over every evaluation, cold start included) minus "
                  "GRPO's on the same seed, averaged over seeds, in points.",
              f"Target: reach GRPO's final accuracy with <= {int(TARGET_SHARE * 100)}% of its completions, in "
              f"every seed{f' with a target ({compared} of {len(grpo_seeds)})' if no_target > 0 else ''}. "
              f"Met by: {', '.join(winners) if winners else 'none'}. On the mean curve over "
              f"seeds: {', '.join(mean_winners) if mean_winners else 'none'}."]
    if pairs:
        lines += paired_markdown(pairs)
    if results:
        lines += stability_markdown(results, cold)
        lines += signal_markdown(results, cold, s.eval_size, s.budget)
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
