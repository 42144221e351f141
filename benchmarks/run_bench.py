#!/usr/bin/env python
"""Thin wrapper around `grpokit bench` (same arguments), usable from a checkout without
installing grpokit:

    python benchmarks/run_bench.py --workload tiny --assets /tmp/grpo_assets --steps 10
    python benchmarks/run_bench.py --workload small --vs-trl --trl-python /tmp/grpo-bench-venv/bin/python

See docs/performance.md and `python benchmarks/run_bench.py --help`.
"""
import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if SRC.is_dir():
    sys.path.insert(0, str(SRC))
    # child runs use `python -m grpokit.bench`; let them find the same source tree
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)

from grpokit.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
