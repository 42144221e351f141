"""Per-call latency of the `python` tool: N calls of `print(1+1)`, after 3 warm-up calls.

    python benchmarks/sandbox_latency.py [--calls 50] [--kwargs '{"guard": false}']

Prints the sandbox's layers, then median / p90 / mean in ms. To compare two versions of
the code, run it under each one's PYTHONPATH on the same machine, at the same load.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from grpokit.tools import build_tool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--kwargs", default="{}", help="the python tool's kwargs as JSON")
    args = ap.parse_args()
    tool = build_tool({"name": "python", "kwargs": json.loads(args.kwargs)})
    print(tool.describe())
    for _ in range(3):
        tool("print(1+1)")
    xs = []
    for _ in range(args.calls):
        start = time.perf_counter()
        out = tool("print(1+1)")
        xs.append(1000 * (time.perf_counter() - start))
        assert out.strip() == "2", out
    xs.sort()
    print(f"{args.calls} calls: median {statistics.median(xs):.1f} ms, p90 {xs[int(0.9 * len(xs)) - 1]:.1f} ms, "
          f"mean {statistics.mean(xs):.1f} ms")


if __name__ == "__main__":
    main()
