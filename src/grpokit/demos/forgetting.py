"""`grpokit study forgetting`: what GRPO on a second task family costs the first.

    grpokit study forgetting --study runs/study-grouping --seeds 0 1 2 \\
        --task-b "mixture?min_ops=1&max_ops=1&gsm8k_share=0" [--steps 30] [--strategies grpo,shrink]

Stage 1 is a finished grouping study (`grpokit study grouping`): each (seed, strategy) run
trained the seed's cold start with GRPO on family A, the study's task. Stage 2 trains each
of those final models on family B with the same strategy and the study's GRPO settings,
and measures both families' held-out accuracy (greedy) before and after. Forgetting is
family A's accuracy after stage 1 minus after stage 2; the cold start's accuracy on A is
shown too, so a stage 2 that erodes what supervised training taught is visible as well.

Each stage is its own run: grouper state (running success rates, a replay window) does
not carry from stage 1 into stage 2.

Results: OUT/forgetting.md (the table, with paired per-seed differences to GRPO and 95%
t intervals), OUT/forgetting.json, and the runs under OUT/seed<S>/<strategy>/. Finished
runs (result.json) are reused.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from grpokit.demos.study import StudySettings, evaluate_saved, run_strategy
from grpokit.demos.study_table import BASELINE, ci_cell


@dataclass
class ForgettingSettings:
    study: str = "runs/study-grouping"  # stage 1: a grouping study's output directory
    task_b: str = "mixture?min_ops=1&max_ops=1&gsm8k_share=0"  # stage 2's family
    steps: int = 30  # stage 2's GRPO steps (32 prompts x 8 completions, as the study)
    eval_every: int = 10
    eval_size_a: int = 1000  # family A's held-out problems (the study's evaluation set)
    eval_size_b: int = 500
    threads: int = 1


def greedy_accuracy(model_dir: Path, task: str, n: int, max_new_tokens: int) -> float:
    """Greedy accuracy of a saved model on the first n test problems of a task."""
    return float(evaluate_saved(model_dir, task, n, max_new_tokens).accuracy)


def stage_one(study: Path) -> tuple[str, dict]:
    """The study's task and settings, from its study.json."""
    info = json.loads((study / "study.json").read_text())
    return info["settings"]["task"], info["settings"]


def run_pair(f: ForgettingSettings, task_a: str, study: dict, seed: int, name: str, out: Path) -> dict:
    """Stage 2 for one (seed, strategy) and the four accuracies around it."""
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    base = Path(f.study) / task_a / f"seed{seed}"
    first = base / name / "model"
    if not first.is_dir():
        raise FileNotFoundError(f"{first}: no stage-1 model (run `grpokit study grouping` for seed {seed}, "
                                f"strategy {name} first)")
    s = StudySettings(task=f.task_b, model=study["model"], steps=f.steps, prompts=study["prompts"],
                      generations=study["generations"], lr=study["lr"], temperature=study["temperature"],
                      warmup=study["warmup"], schedule=study["schedule"], max_new_tokens=study["max_new_tokens"],
                      eval_every=f.eval_every, eval_size=f.eval_size_b, threads=f.threads,
                      extra=list(study.get("extra", [])))
    tokens = study["max_new_tokens"]
    before_a = greedy_accuracy(first, task_a, f.eval_size_a, tokens)
    before_b = greedy_accuracy(first, f.task_b, f.eval_size_b, tokens)
    run = run_strategy(s, name, seed, first, out / "run")
    after_a = greedy_accuracy(out / "run" / "model", task_a, f.eval_size_a, tokens)
    cold = json.loads((base / "cold_start" / "cold_start.json").read_text())["accuracy"]
    result = {"strategy": name, "seed": seed, "cold_a": cold, "before_a": before_a, "after_a": after_a,
              "before_b": before_b, "after_b": run["curve"][-1][1] if run["curve"] else before_b,
              "curve_b": run["curve"], "seconds": run["seconds"]}
    done.write_text(json.dumps(result))
    return result


def markdown(results: list[dict], f: ForgettingSettings, task_a: str) -> str:
    by = {(r["strategy"], r["seed"]): r for r in results}
    names = list(dict.fromkeys(r["strategy"] for r in results))
    pct = lambda xs: f"{100 * statistics.fmean(xs):.1f}"  # noqa: E731
    lines = [f"# Forgetting: GRPO on `{f.task_b}` after GRPO on `{task_a}`", "",
             f"Stage 2: {f.steps} GRPO steps per (seed, strategy) from stage 1's final model, the same strategy. "
             f"Greedy accuracy (%) on {f.eval_size_a} held-out problems of A and {f.eval_size_b} of B, mean over "
             "seeds; forgetting = A after stage 1 minus A after stage 2 (positive: A was lost).", "",
             "| strategy | seeds | A: cold start | A: after stage 1 | A: after stage 2 | forgetting | "
             "B: before | B: after | forgetting minus GRPO's (paired, 95% t interval; per seed) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        rs = [by[(name, seed)] for seed in sorted(seed for (n, seed) in by if n == name)]
        drop = [r["before_a"] - r["after_a"] for r in rs]
        paired = "-"
        if name != BASELINE:
            seeds = [r["seed"] for r in rs if (BASELINE, r["seed"]) in by]
            paired = ci_cell([(by[(name, x)]["before_a"] - by[(name, x)]["after_a"])
                              - (by[(BASELINE, x)]["before_a"] - by[(BASELINE, x)]["after_a"]) for x in seeds])
        lines.append(f"| {name} | {len(rs)} | {pct([r['cold_a'] for r in rs])} | {pct([r['before_a'] for r in rs])} | "
                     f"{pct([r['after_a'] for r in rs])} | {100 * statistics.fmean(drop):+.1f} | "
                     f"{pct([r['before_b'] for r in rs])} | {pct([r['after_b'] for r in rs])} | {paired} |")
    return "\n".join(lines) + "\n"


def study_forgetting(f: ForgettingSettings, seeds: Sequence[int], strategies: Sequence[str], out: Path, *,
                     report_only: bool = False) -> dict:
    """Run the missing pairs (with report_only, only gather the finished ones) and write
    the table and the JSON."""
    import torch

    torch.set_num_threads(f.threads)
    task_a, settings = stage_one(Path(f.study))
    results = []
    for seed in seeds:
        for name in strategies:
            if report_only and not (out / f"seed{seed}" / name / "result.json").is_file():
                print(f"seed {seed} {name:<20} not run", flush=True)
                continue
            r = run_pair(f, task_a, settings, seed, name, out / f"seed{seed}" / name)
            print(f"seed {seed} {name:<20} A {100 * r['before_a']:.1f} -> {100 * r['after_a']:.1f}, "
                  f"B {100 * r['before_b']:.1f} -> {100 * r['after_b']:.1f}", flush=True)
            results.append(r)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(results, f, task_a)
    (out / "forgetting.md").write_text(md)
    (out / "forgetting.json").write_text(json.dumps({"settings": dataclasses.asdict(f), "task_a": task_a,
                                                     "runs": results}, indent=1))
    print(md, flush=True)
    return {"results": results}


def add_parser(sub) -> None:
    d = ForgettingSettings()
    p = sub.add_parser("forgetting", help="GRPO on a second task family after a grouping study: what the first loses")
    p.add_argument("--study", default=d.study, help="the grouping study's --out (stage 1)")
    p.add_argument("--task-b", default=d.task_b, help="stage 2's task: NAME or NAME?option=value&...")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", default=BASELINE, help="comma-separated, each run in stage 1 (grpo always)")
    for name, typ in (("steps", int), ("eval_every", int), ("eval_size_a", int), ("eval_size_b", int),
                      ("threads", int)):
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, help=f"default: {getattr(d, name)}")
    p.add_argument("--out", default="runs/study-forgetting")
    p.add_argument("--report-only", action="store_true", help="train nothing: summarise the finished pairs")


def run_from(args) -> int:
    f = ForgettingSettings(study=args.study, task_b=args.task_b)
    for name in ("steps", "eval_every", "eval_size_a", "eval_size_b", "threads"):
        if getattr(args, name) is not None:
            setattr(f, name, getattr(args, name))
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    if BASELINE not in names:
        names.insert(0, BASELINE)
    study_forgetting(f, args.seeds, names, Path(args.out), report_only=args.report_only)
    return 0
