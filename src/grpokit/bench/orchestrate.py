"""`grpokit bench` across processes: one fresh child per measured run (grpokit, or TRL
through ../shared/bench/trl_baseline.py with another Python), alternating ABBA between
implementations and allocator settings, then the side-by-side ratios."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from grpokit.bench.machine import cpu_name, wait_idle
from grpokit.bench.run import ALLOCATORS, TRL_REFERENCE, WORKLOADS, read_ceiling


def _repo_shared_bench() -> Path | None:
    here = Path(__file__).resolve()
    for root in list(here.parents)[:6]:
        cand = root / "shared" / "bench"
        if (cand / "trl_baseline.py").is_file():
            return cand
    return None


def repo_root() -> Path:
    """The checkout holding src/grpokit (benchmarks/ lives next to src/)."""
    return Path(__file__).resolve().parents[3]


def env_for(alloc: str, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # This process may run under grpokit's own setting (grpokit.engine.allocator); a child starts
    # clean, so that under "default" TRL gets glibc's defaults and grpokit applies its own.
    for key in ("GLIBC_TUNABLES", "GRPOKIT_ALLOCATOR_SET"):
        env.pop(key, None)
    if ALLOCATORS[alloc]:
        env["GLIBC_TUNABLES"] = ALLOCATORS[alloc]
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def child(cmd: list[str], env: dict[str, str], log: Path) -> int:
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def grpokit_cmd(args: argparse.Namespace, json_out: Path, ceiling: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "grpokit.bench", "--in-process", "--workload", args.workload, "--assets",
           args.assets, "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--seed", str(args.seed), "--json-out", str(json_out)]
    if ceiling:
        cmd += ["--ceiling-json", ceiling]
    return cmd + list(args.overrides)


def _trl_cmd(args: argparse.Namespace, script: Path, json_out: Path, ceiling: str | None, tmp: Path) -> list[str]:
    cmd = [args.trl_python, str(script), "--model", args.workload, "--assets", args.assets, "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads), "--json-out",
           str(json_out), "--output-dir", str(tmp / "trl_out")]
    if ceiling:
        cmd += ["--ceiling-json", ceiling]
    return cmd


def _summary(impl: str, alloc: str, r: dict[str, Any]) -> dict[str, Any]:
    """The figures compared between implementations (same keys in both JSON files)."""
    c = r["median_components_s"]
    frac = r.get("fraction_of_ceiling", {}).get("simple")
    return {"impl": impl, "allocator": alloc, "median_s": r["wall_per_step_s"]["median"],
            "min_s": r["wall_per_step_s"]["min"], "max_s": r["wall_per_step_s"]["max"],
            "tok_s": r["completion_tokens_per_s"]["median"], "generate_s": c["generate_s"],
            "ref_fwd_s": c["ref_fwd_s"], "policy_fwd_s": c["policy_fwd_s"], "backward_s": c["backward_s"],
            "optimizer_s": c["optimizer_s"], "peak_rss_mib": r["peak_rss_mib"],
            "frac_ceiling_simple": frac, "flops_simple": c["flops_simple"],
            "minor_faults": c.get("minor_faults"), "foreign_cores": r["machine_load"]["foreign_cores_avg"]}


def orchestrate(args: argparse.Namespace) -> int:
    workload = WORKLOADS[args.workload]
    assets = Path(args.assets)
    if not (assets / "models" / workload.model / "config.json").is_file():
        hint = _repo_shared_bench()
        make = f"python {hint / 'make_assets.py'} --out {assets}" if hint else "shared/bench/make_assets.py"
        print(f"grpokit bench: no model at {assets / 'models' / workload.model}; build the assets first:\n  {make}",
              file=sys.stderr)
        return 2
    allocs = {"both": ["default", "tunables"], "all": list(ALLOCATORS)}.get(args.allocator, [args.allocator])
    impls = ["grpokit"]
    script = None
    if args.vs_trl:
        script = Path(args.trl_script) if args.trl_script else (
            repo_root() / workload.trl_script if workload.trl_script
            else (_repo_shared_bench() or Path("?")) / "trl_baseline.py")
        if not script.is_file():
            print(f"grpokit bench: --vs-trl needs trl_baseline.py (--trl-script); not found at {script}",
                  file=sys.stderr)
            return 2
        if not Path(args.trl_python).exists():
            print(f"grpokit bench: --trl-python {args.trl_python} does not exist; create the TRL venv as in "
                  "shared/bench/BASELINE.md", file=sys.stderr)
            return 2
        impls.append("trl")
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="grpokit_bench_logs_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"[bench] workload {workload.name}: {args.steps} steps, stats over steps {args.warmup + 1}..{args.steps}; "
          f"runs: {args.repeats} x {impls} x allocator {allocs}; logs in {log_dir}", flush=True)
    print(f"[bench] machine: {cpu_name()}, {os.cpu_count()} CPUs, {args.threads} threads; TRL reference "
          f"(BASELINE.md): {TRL_REFERENCE.get(workload.name, 'none recorded')}", flush=True)

    ceiling_path = args.ceiling_json
    if not ceiling_path and not args.no_ceiling:
        if args.wait_idle:
            wait_idle(timeout=args.idle_timeout)
        ceiling_path = str(log_dir / "flops_ceiling.json")
        rc = child([sys.executable, "-m", "grpokit.bench", "--measure-ceiling", "--threads", str(args.threads),
                     "--json-out", ceiling_path], env_for("default", args.threads), log_dir / "ceiling.log")
        if rc != 0:
            print(f"[bench] ceiling measurement failed (see {log_dir / 'ceiling.log'})", file=sys.stderr)
            return 1
    ceiling = read_ceiling(ceiling_path)
    if ceiling:
        print(f"[bench] fp32 matmul ceiling: {ceiling / 1e9:.1f} GFLOP/s ({ceiling_path})", flush=True)

    plan = []
    for rep in range(args.repeats):
        order = [(impl, alloc) for alloc in allocs for impl in impls]
        plan += [(rep, *x) for x in (order if rep % 2 == 0 else order[::-1])]
    results: list[dict[str, Any]] = []
    for rep, impl, alloc in plan:
        for attempt in range(args.retries + 1):
            if args.wait_idle:
                wait_idle(timeout=args.idle_timeout)
            tag = f"{impl}_{alloc}_r{rep}" + (f"_try{attempt}" if attempt else "")
            json_out = log_dir / f"{tag}.json"
            cmd = (grpokit_cmd(args, json_out, ceiling_path) if impl == "grpokit"
                   else _trl_cmd(args, script, json_out, ceiling_path, log_dir))
            t0 = time.perf_counter()
            rc = child(cmd, env_for(alloc, args.threads), log_dir / f"{tag}.log")
            if rc != 0 or not json_out.is_file():
                print(f"[bench] {tag}: FAILED (exit {rc}); log: {log_dir / (tag + '.log')}", file=sys.stderr)
                return 1
            r = json.loads(json_out.read_text())
            s = _summary(impl, alloc, r)
            s.update(rep=rep, attempt=attempt, json=str(json_out), run_s=time.perf_counter() - t0)
            frac = f"{s['frac_ceiling_simple'] * 100:.1f}%" if s["frac_ceiling_simple"] else "n/a"
            print(f"[bench] {tag}: median {s['median_s']:.3f} s/step ({s['min_s']:.3f}-{s['max_s']:.3f}), "
                  f"{s['tok_s']:.0f} tok/s, peak RSS {s['peak_rss_mib']:.0f} MiB, {frac} of ceiling, "
                  f"foreign load {s['foreign_cores']:.2f} cores", flush=True)
            if s["foreign_cores"] <= args.max_foreign or attempt == args.retries:
                s["contaminated"] = s["foreign_cores"] > args.max_foreign
                results.append(s)
                break
            print(f"[bench] {tag}: other processes used {s['foreign_cores']:.2f} cores; repeating", flush=True)

    report = {"workload": workload.name, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
              "cpu": cpu_name(), "ceiling_flops_per_s": ceiling, "runs": results,
              "comparison": compare(results, workload.name)}
    print_comparison(report)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.json_out}")
    return 0


TARGETS = {  # issue 5: grpokit / TRL step-time ratios (and RSS), measured side by side
    "tiny": {("default", "default"): 0.5},
    "small": {("default", "default"): 0.6, ("best", "tunables"): 0.9},
}


def compare(results: list[dict[str, Any]], workload: str) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in results:
        groups[(s["impl"], s["allocator"])].append(s)
    agg = {}
    for (impl, alloc), runs in groups.items():
        agg[f"{impl}/{alloc}"] = {
            "runs": len(runs),
            "median_s": statistics.median(r["median_s"] for r in runs),
            "run_medians_s": [r["median_s"] for r in runs],
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
            "tok_s": statistics.median(r["tok_s"] for r in runs),
            "frac_ceiling_simple": (statistics.median(r["frac_ceiling_simple"] for r in runs)
                                    if all(r["frac_ceiling_simple"] for r in runs) else None),
            "contaminated": any(r["contaminated"] for r in runs),
            **{k: statistics.median(r[k] for r in runs)
               for k in ("generate_s", "ref_fwd_s", "policy_fwd_s", "backward_s", "optimizer_s")},
        }
    ratios = {}
    g_allocs = [a for (i, a) in groups if i == "grpokit"]
    t_allocs = [a for (i, a) in groups if i == "trl"]
    if g_allocs and t_allocs:
        best = min(g_allocs, key=lambda a: agg[f"grpokit/{a}"]["median_s"])
        for ga in g_allocs + ["best"]:
            gname = f"grpokit/{best if ga == 'best' else ga}"
            for ta in t_allocs:
                key = f"{'grpokit(best: ' + best + ')' if ga == 'best' else gname} / trl/{ta}"
                ratio = agg[gname]["median_s"] / agg[f"trl/{ta}"]["median_s"]
                target = TARGETS.get(workload, {}).get((ga, ta))
                ratios[key] = {"step_time": ratio, "target": target,
                               "meets": None if target is None else ratio <= target,
                               "peak_rss": agg[gname]["peak_rss_mib"] / agg[f"trl/{ta}"]["peak_rss_mib"]}
    return {"by_config": agg, "ratios": ratios}


def print_comparison(report: dict[str, Any]) -> None:
    cmp = report["comparison"]
    print(f"\n== SUMMARY workload={report['workload']} ({report['steps']} steps, stats over steps "
          f"{report['warmup'] + 1}..{report['steps']}; median over runs of each run's median)")
    hdr = f"{'impl/allocator':<18} {'runs':>4} {'s/step':>8} {'tok/s':>7} {'gen':>7} {'ref':>7} {'pol fwd':>7} " \
          f"{'bwd':>7} {'opt':>6} {'RSS MiB':>8} {'%ceil':>6}  run medians"
    print(hdr)
    for name, a in cmp["by_config"].items():
        frac = f"{a['frac_ceiling_simple'] * 100:5.1f}%" if a["frac_ceiling_simple"] else "   n/a"
        flag = "  LOADED MACHINE" if a["contaminated"] else ""
        print(f"{name:<18} {a['runs']:>4} {a['median_s']:>8.3f} {a['tok_s']:>7.0f} {a['generate_s']:>7.3f} "
              f"{a['ref_fwd_s']:>7.3f} {a['policy_fwd_s']:>7.3f} {a['backward_s']:>7.3f} {a['optimizer_s']:>6.3f} "
              f"{a['peak_rss_mib']:>8.0f} {frac}  {', '.join(f'{x:.3f}' for x in a['run_medians_s'])}{flag}")
    if cmp["ratios"]:
        print("\nratios grpokit / TRL (step time; peak RSS):")
        for key, r in cmp["ratios"].items():
            tgt = "" if r["target"] is None else f"  target <= {r['target']}: {'met' if r['meets'] else 'NOT met'}"
            print(f"  {key:<40} {r['step_time']:.3f}   RSS {r['peak_rss']:.3f}{tgt}")
    if any(a["contaminated"] for a in cmp["by_config"].values()):
        print("WARNING: some runs had other processes using CPU; their timings are not valid comparisons.")
