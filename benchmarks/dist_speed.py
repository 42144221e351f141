"""Several processes against one on the same cores: W2 (or W1) of ../shared/bench/BASELINE.md
trained by 1 process x T threads, then by T processes x 1 thread (run.parallel=ddp and
fsdp), through `grpokit train` as a user runs it.

    python benchmarks/dist_speed.py --assets /tmp/grpo_assets --workload small --steps 10

Prints, per layout: median seconds per step over steps warmup+1..N (from metrics.jsonl),
throughput relative to the one process, the peak RSS of each training process (polled
from /proc every 0.2 s: the launcher's children), and the parameter + gradient + optimizer
bytes rank 0 holds (the run's memory/* metrics). Run it on an otherwise idle machine: the
machine's load is printed before each run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _is_trainer(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # the training processes run `-m grpokit train`; torchrun's agent runs torch.distributed.run
    return b"grpokit" in cmd and b"torch.distributed.run" not in cmd


def run_layout(config: Path, out: Path, nproc: int, threads: int, parallel: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "grpokit", "train", "--config", str(config), "--out", str(out),
           f"run.threads={threads}", f"run.parallel={parallel}"] + (["--nproc", str(nproc)] if nproc > 1 else [])
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, float] = {}
    while proc.poll() is None:
        for pid in [proc.pid] + _descendants(proc.pid):
            if _is_trainer(pid):
                peaks[pid] = max(peaks.get(pid, 0.0), _rss_mib(pid))
        time.sleep(0.2)
    log = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"rows": rows, "peaks": sorted(peaks.values(), reverse=True)[:nproc], "load": load}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", type=Path, required=True, help="BASELINE.md's assets (make_assets.py)")
    p.add_argument("--workload", default="small", help="tiny (W1) or small (W2)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cores", type=int, default=2, help="threads of the one process = processes of the others")
    p.add_argument("--layouts", default="ddp,fsdp")
    args = p.parse_args()

    from grpokit.bench.run import WORKLOADS, workload_config
    from grpokit.config.io import dump_yaml

    work = Path(tempfile.mkdtemp(prefix="grpokit-dist-speed-"))
    cfg = workload_config(WORKLOADS[args.workload], args.assets, steps=args.steps, seed=0, threads=args.cores,
                          out=str(work / "unused"))
    # keyed sampling in every layout: all of them sample the same completions
    cfg.rollout.seeding = "keyed"
    cfg.run.eval_before = False
    config = work / "recipe.yaml"
    dump_yaml(cfg, config)
    layouts = [("1 x %d threads" % args.cores, 1, args.cores, "ddp")]
    layouts += [(f"{args.cores} x 1 thread, {name}", args.cores, 1, name) for name in args.layouts.split(",")]
    results = []
    for label, nproc, threads, parallel in layouts:
        res = run_layout(config, work / label.replace(" ", "_").replace(",", ""), nproc, threads, parallel)
        steps = [r for r in res["rows"] if r.get("step", 0) > args.warmup and "step_time" in r]
        sec = statistics.median(r["step_time"] for r in steps)
        state = sum(res["rows"][-1][f"memory/{k}_mib"] for k in ("params", "grads", "optimizer"))
        results.append((label, sec, res, state))
    base = results[0][1]
    print(f"workload {args.workload}, {args.steps} steps (median of steps {args.warmup + 1}..{args.steps}), "
          f"cpu: {os.cpu_count()} logical")
    print(f"{'layout':28s} {'s/step':>8s} {'throughput':>10s} {'peak RSS per process (MiB)':>28s} "
          f"{'params+grads+optim (MiB)':>25s} {'load before':>11s}")
    for label, sec, res, state in results:
        peaks = ", ".join(f"{m:.0f}" for m in res["peaks"])
        print(f"{label:28s} {sec:8.3f} {base / sec:9.2f}x {peaks:>28s} {state:25.1f} {res['load']:11.2f}")
    rewards = [[r.get("reward") for r in res["rows"] if "reward" in r] for _, _, res, _ in results]
    print("same rewards in every layout:", all(r == rewards[0] for r in rewards))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
