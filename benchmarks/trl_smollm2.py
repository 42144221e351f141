#!/usr/bin/env python
"""TRL side of bench workload W3 (SmolLM2-135M-Instruct; grpokit.bench_smollm2).

Runs ../shared/bench/trl_baseline.py unchanged -- the same GRPOConfig as W1/W2 (fp32 CPU,
temperature 1.0, beta 0.04, lr 1e-5, one generation batch per optimizer step, no
gradient checkpointing) -- with W3's shape: the SmolLM2 model directory, 8 prompts x 4
completions, max_completion_length 128, and the chat-rendered prompts that
`grpokit bench --workload smollm2` writes (data/smollm2_chat_512.jsonl), exposed to the
script as data/arith_512.jsonl of a temporary assets folder.

Usage (what `grpokit bench --workload smollm2 --vs-trl` runs, with the TRL venv's Python):
  python benchmarks/trl_smollm2.py --assets /tmp/grpo_assets --steps 10 --json-out w3_trl.json
Arguments other than --model/--assets are passed to trl_baseline.py as they are.
"""
import argparse
import os
import runpy
import sys
import tempfile
from pathlib import Path

MODEL_DIR, DATA_FILE = "smollm2-135m", "smollm2_chat_512.jsonl"
SHAPE = ["--max-completion-length", "128", "--num-generations", "4", "--prompts-per-step", "8"]


def find_baseline(explicit):
    if explicit:
        return Path(explicit)
    here = Path(__file__).resolve()
    for root in list(here.parents)[:5]:
        cand = root / "shared" / "bench" / "trl_baseline.py"
        if cand.is_file():
            return cand
    sys.exit("trl_smollm2.py: shared/bench/trl_baseline.py not found; pass --baseline PATH")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", default="/tmp/grpo_assets")
    ap.add_argument("--model", default="smollm2", help="ignored: W3's model is ASSETS/models/smollm2-135m")
    ap.add_argument("--baseline", default=None, help="path of shared/bench/trl_baseline.py")
    args, rest = ap.parse_known_args()
    assets = Path(args.assets)
    model, data = assets / "models" / MODEL_DIR, assets / "data" / DATA_FILE
    for path, how in ((model / "config.json", f"grpokit model get smollm2-135m --out {model}"),
                      (data, "grpokit bench --workload smollm2 (writes it on first use)")):
        if not path.is_file():
            sys.exit(f"trl_smollm2.py: {path} missing; create it with: {how}")
    view = Path(tempfile.mkdtemp(prefix="trl_smollm2_assets_"))
    (view / "data").mkdir()
    os.symlink(data, view / "data" / "arith_512.jsonl")
    baseline = find_baseline(args.baseline)
    sys.argv = [str(baseline), "--model", str(model), "--assets", str(view), *SHAPE, *rest]
    runpy.run_path(str(baseline), run_name="__main__")


if __name__ == "__main__":
    main()
