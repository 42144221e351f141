"""`grpokit study`: the command line of the studies.

    grpokit study grouping [--seeds 0 1 2] [--strategies grpo,semantic,...] [--out DIR]   (grpokit.demos.study)
    grpokit study grouping --quick                # a smoke test: seconds, numbers mean nothing
    grpokit study gradient [--model DIR] ...      # the estimator itself (grpokit.demos.gradient)
    grpokit study forgetting --study DIR ...      # a second family after GRPO (grpokit.demos.forgetting)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from grpokit.demos import forgetting, gradient, study
from grpokit.demos.study import STRATEGIES, StudySettings
from grpokit.demos.study_table import BASELINE


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="grpokit study", description=study.__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True, metavar="{grouping,gradient,forgetting}")
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
                      ("eval_size", int), ("pass_k", int), ("cold_stop", float), ("threads", int), ("model", str),
                      ("lr", float)):
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, help=f"default: {getattr(StudySettings(), name)}")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every GRPO run")
    gradient.add_parser(sub)
    forgetting.add_parser(sub)
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.what == "forgetting":
        return forgetting.run_from(args)
    if args.what == "gradient":
        gs = gradient.settings_from(args, ap.error)

        def gradient_cold_start() -> Path:
            model_dir, acc = study.cold_start(StudySettings(task=gs.task, threads=gs.threads), gs.seed,
                                        Path(args.out) / "cold_start")
            print(f"cold start: {model_dir} ({100 * acc:.1f}% held-out accuracy)", flush=True)
            return model_dir

        gradient.run(gs, Path(args.out), cold_start=gradient_cold_start)
        return 0
    s = StudySettings.quick() if args.quick else StudySettings()
    s.task = args.task
    for name in ("steps", "prompts", "generations", "eval_every", "eval_size", "pass_k", "cold_stop", "threads",
                 "model", "lr"):
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
    study.study_grouping(s, args.seeds, names, Path(args.out), report_only=args.report_only)
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
