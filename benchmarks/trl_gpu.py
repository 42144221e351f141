"""TRL's GRPOTrainer on grpokit's GPU workload (`grpokit bench --workload qwen2-0.5b`), for
a side-by-side on the same GPU. TRL is not a grpokit dependency: run this with a Python
that has TRL.

    python benchmarks/trl_gpu.py --assets /tmp/grpo_assets --steps 8 --json-out trl.json

The same work per optimizer step as grpokit's workload: 16 prompts x 8 completions of up
to 256 tokens sampled with transformers' generate at temperature 1.0, the hash reward of
grpokit.bench.gpu, beta 0.04 with a reference model, DAPO loss (TRL's default), lr 1e-5
linear, micro-batches of 32 rows (gradient accumulation 4, one generation per optimizer
step), bf16 weights from the saved bf16 model, no gradient checkpointing. Seconds per
optimizer step are the wall time between consecutive step ends (a TrainerCallback);
statistics skip the first --warmup steps, as grpokit's bench does.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerFast, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from grpokit.bench.gpu import hash_reward  # noqa: E402


def reward(completions, **_):
    return [hash_reward(c) for c in completions]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []
        self.start = 0.0

    def on_train_begin(self, args, state, control, **kw):
        _sync()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        _sync()
        self.ends.append(time.perf_counter())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", default="/tmp/grpo_assets")
    ap.add_argument("--workload", default="qwen2-0.5b")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--output-dir", default="/tmp/trl_gpu_out")
    ap.add_argument("--max-completion-length", type=int, default=256)
    ap.add_argument("--cpu", action="store_true", help="smoke test of this script on a machine without a GPU (fp32)")
    args = ap.parse_args()
    import trl

    model_dir = Path(args.assets) / "models" / args.workload
    rows = [json.loads(line) for line in open(Path(args.assets) / "data" / "prompts.jsonl")]
    tok = PreTrainedTokenizerFast.from_pretrained(str(model_dir))  # the saved word-level tokenizer, as grpokit loads it
    cfg = GRPOConfig(
        output_dir=args.output_dir, bf16=not args.cpu, use_cpu=args.cpu, use_vllm=False, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, max_steps=args.steps, per_device_train_batch_size=32,
        gradient_accumulation_steps=4, num_generations=8, max_completion_length=args.max_completion_length, temperature=1.0, beta=0.04,
        learning_rate=1e-5, lr_scheduler_type="linear", gradient_checkpointing=False, seed=42,
        dataloader_num_workers=0, model_init_kwargs={"dtype": torch.float32 if args.cpu else torch.bfloat16},
    )
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=reward, args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=tok)
    clock = StepClock()
    trainer.add_callback(clock)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    walls = [b - a for a, b in zip([clock.start] + clock.ends[:-1], clock.ends)][args.warmup:]
    res = {"impl": "trl", "trl": trl.__version__, "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
           "generation_batch_size": cfg.generation_batch_size, "steps_per_generation": cfg.steps_per_generation,
           "loss_type": cfg.loss_type, "steps": args.steps, "warmup": args.warmup,
           "wall_per_step_s": {"median": statistics.median(walls), "min": min(walls), "max": max(walls),
                               "n": len(walls)},
           "gpu_peak_allocated_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else 0.0,
           "history": trainer.state.log_history}
    print(f"== RESULT trl {trl.__version__}: median {res['wall_per_step_s']['median']:.3f} s/step "
          f"(min {min(walls):.3f}, max {max(walls):.3f}); GPU peak allocated {res['gpu_peak_allocated_mib']:.0f} MiB; "
          f"generation batch {cfg.generation_batch_size}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
