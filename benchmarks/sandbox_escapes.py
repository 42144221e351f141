"""Run the adversarial programs of tests/sandbox_attacks.py against the `python` tool
importable here and print a table: program -> contained or ESCAPED.

    PYTHONPATH=src python benchmarks/sandbox_escapes.py [--guard off]

Point PYTHONPATH at another checkout's src to measure that version (kwargs it does not
know are dropped). Attacks that signal every process they can see are only run where
calls are isolated by a PID namespace or run as a uid of their own (root).
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sandbox_attacks import ATTACKS, Env, run_attack  # noqa: E402

from grpokit.tools import TOOLS, build_tool  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--guard", choices=["on", "off"], default="on")
    args = ap.parse_args()
    known = set(inspect.signature(TOOLS.resolve("python")).parameters)
    base = {"timeout": 4, "cpu_seconds": 2, "memory_mb": 256, "max_output_chars": 600, "guard": args.guard == "on"}

    def make(kwargs: dict):
        kw = {k: v for k, v in {**base, **kwargs}.items() if k in known}
        return build_tool({"name": "python", "kwargs": kw})

    tool = make({})
    print(f"# {getattr(tool, 'isolation', '?')}; guard {args.guard}; root={os.geteuid() == 0}")
    escaped = 0
    for attack in ATTACKS:
        env = Env.make()
        try:
            ok, detail = run_attack(make, attack, env)
        finally:
            env.close()
        escaped += not ok
        print(f"| {attack.name} | {'contained' if ok else 'ESCAPED'} | {detail[:90]} |", flush=True)
    print(f"# {len(ATTACKS) - escaped} of {len(ATTACKS)} contained")


if __name__ == "__main__":
    main()
