"""Crash soak: SIGKILL a seeded training run many times at random moments, resume it each
time, and require the result to be bit-identical to an uninterrupted run.

    python benchmarks/crash_soak.py                          # every feature, 10 kills each
    python benchmarks/crash_soak.py --features lora --kills 20 --steps 16

Each kill runs in a fresh process (tests/crash_driver.py) and lands at a random moment
(inside a checkpoint write, before its COMPLETE marker, at the rename into place, while
pruning, mid-step, or in the final model save) on a random occurrence of it. A run killed
before its first checkpoint is started again with --overwrite; otherwise it continues with
--resume. The features are the short crash test's (tests/test_crash_resume.py: beta > 0,
a temporal grouper with replay, the calculator tool, LoRA) plus all of them at once.
Compared: final weights, metrics.jsonl without wall-clock fields, samples.jsonl.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from test_crash_resume import FEATURES, assert_same_run, base_args  # noqa: E402

from grpokit.run_dir import complete_checkpoints, is_run  # noqa: E402

DRIVER = TESTS / "crash_driver.py"
MOMENTS = ("state", "marker", "rename", "prune", "step", "model")
ALL = [a for extra in FEATURES.values() for a in extra]


def run(args: list[str], kind: str = "none", n: int = 1) -> int:
    proc = subprocess.run([sys.executable, str(DRIVER), kind, str(n), "--", *args], capture_output=True, text=True)
    if proc.returncode not in (0, -9):
        raise SystemExit(f"unexpected exit {proc.returncode} for {kind}#{n}:\n{proc.stderr[-3000:]}")
    return proc.returncode


def soak(name: str, extra: list[str], kills: int, steps: int, rng: random.Random, root: Path) -> dict:
    work = root / name
    work.mkdir()
    args = [*base_args(work, steps), *extra, "run.save_every=2"]
    t0 = time.perf_counter()
    assert run([*args, "--out", str(work / "ref")]) == 0
    out = work / "run"
    log, done = [], False
    while len(log) < kills and not done:
        # Occurrences that come before the run ends (a resumed run has fewer steps left);
        # a moment that never comes lets the run finish, which ends this soak early.
        kind = rng.choice(MOMENTS)
        n = rng.randint(1, 3) if kind == "step" else 1
        mode = ["--resume"] if complete_checkpoints(out) else (["--overwrite"] if is_run(out) else [])
        rc = run([*args, "--out", str(out), *mode], kind, n)
        log.append({"moment": kind, "occurrence": n, "start": mode[0] if mode else "new", "killed": rc == -9})
        done = rc == 0
    if not done:
        mode = ["--resume"] if complete_checkpoints(out) else (["--overwrite"] if is_run(out) else [])
        assert run([*args, "--out", str(out), *mode]) == 0
    assert_same_run(work / "ref", out)
    return {"feature": name, "kills": sum(k["killed"] for k in log), "attempts": log,
            "seconds": round(time.perf_counter() - t0, 1), "identical": True}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", nargs="*", default=[*FEATURES, "all"], help=f"{', '.join(FEATURES)}, all")
    ap.add_argument("--kills", type=int, default=10, help="kill attempts per feature")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="grpokit_crash_soak_"))
    results = []
    for name in args.features:
        res = soak(name, ALL if name == "all" else FEATURES[name], args.kills, args.steps, rng, root)
        results.append(res)
        moments = " ".join(f"{a['moment']}#{a['occurrence']}{'' if a['killed'] else '(ran to the end)'}"
                           for a in res["attempts"])
        print(json.dumps({**{k: v for k, v in res.items() if k != "attempts"}, "moments": moments}), flush=True)
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print(f"all {len(results)} soaks identical to their uninterrupted runs "
          f"({sum(r['kills'] for r in results)} kills)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
