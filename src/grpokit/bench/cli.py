"""`grpokit bench`'s command line: a measured run in this process (`--in-process`,
`--measure-ceiling`), or the orchestration of fresh child runs (CPU or GPU workloads).
The measured run is in run.py, the orchestration in orchestrate.py and gpu.py."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

from grpokit.bench.gpu import orchestrate as orchestrate_gpu
from grpokit.bench.orchestrate import compare as orchestrate_compare
from grpokit.bench.orchestrate import orchestrate
from grpokit.bench.machine import measure_ceiling
from grpokit.bench.run import WORKLOADS, build_parser, run_grpokit


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.steps <= args.warmup:
        print("grpokit bench: --steps must be larger than --warmup", file=sys.stderr)
        return 2
    if args.measure_ceiling:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        res = measure_ceiling(args.threads)
        print(f"CEILING {res['ceiling_flops_per_s'] / 1e9:.1f} GFLOP/s ({res['shape']}, {res['threads']} threads)")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(res, indent=1))
        return 0
    if args.workload == "smollm2":  # its chat-rendered prompt file is written on first use
        from grpokit.bench.smollm2 import prepare_assets

        try:
            prepare_assets(Path(args.assets))
        except (FileNotFoundError, ValueError) as e:
            print(f"grpokit bench: {e}", file=sys.stderr)
            return 2
    if args.in_process:
        run_grpokit(args)
        return 0
    if WORKLOADS[args.workload].device != "cpu":
        return orchestrate_gpu(args)
    if args.allocator is None:
        args.allocator = "both" if args.vs_trl else "default"
    return orchestrate(args)


def compare(results, workload: str):
    """Side-by-side ratios of finished runs (`grpokit.bench.orchestrate.compare`)."""
    return orchestrate_compare(results, workload)
