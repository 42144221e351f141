"""`grpokit bench`: time grpokit's GRPO training loop on the TRL reference workloads.

    grpokit bench --workload tiny --assets /tmp/grpo_assets --steps 10
    grpokit bench --workload small --assets /tmp/grpo_assets --vs-trl --repeats 2

The workloads are the ones of ../shared/bench/BASELINE.md (built by its make_assets.py):
the same model directories, the same 512 arithmetic prompts, 4 prompts x 8 completions
per step, max_completion_length 32 (tiny) or 64 (small), temperature 1.0, beta 0.04 with
a reference model, lr 1e-5 with linear decay, one pass, DAPO token-mean loss with
group-scaled advantages, clip 0.2, max_grad_norm 1.0, fp32 on 2 threads. The reward is
1.0 when any integer in the completion equals the answer.

Each measured run is a fresh child process that calls `grpokit.train.train()` (the code
path of `grpokit train`) with instrumentation hooks; nothing of the loop is
re-implemented here. Per step it records the wall time between consecutive step ends
(step 1 from the start of the loop), the phase times the loop itself measures
(generation, rewards, reference pass, policy forward, backward + grad clipping,
optimizer), completion tokens, decoder positions per phase (for FLOP counts), RSS and
page faults. Statistics are over steps warmup+1..N (default 3..10), as in BASELINE.md.

FLOPs: "simple" is BASELINE.md's estimate, computed from the shape of the step's batch
exactly as trl_baseline.py counts TRL's forward positions: 2*N*positions for generation
(prefill + one decode step per further token, padding and finished rows included) and
for the reference pass, 6*N*positions for training, N = matmul parameters. "executed"
counts what grpokit ran: positions from forward hooks on the input embedding, the output layer only on
rows that produce a log-prob or a sampled token. Attention-score FLOPs are left out.

--vs-trl runs ../shared/bench/trl_baseline.py with another Python (a venv that has TRL;
TRL is not a grpokit dependency), alternating with grpokit runs, with and without
GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
(--allocator), and prints the ratios. Other processes on a 2-core machine slow torch by
10-100x: each run waits for an idle machine (--wait-idle), records the CPU other
processes used during it, and is repeated (--retries) when that exceeds --max-foreign.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from grpokit.engine.allocator import TUNABLES as GRPOKIT_TUNABLES
from grpokit.bench.machine import (  # noqa: F401 - cpu_snapshot etc. are part of this module's API
    cpu_name, cpu_snapshot, machine_load, measure_ceiling, summarize, wait_idle)

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
# default: no GLIBC_TUNABLES from the bench (TRL then runs on glibc's defaults; grpokit
# applies its own, grpokit.engine.allocator, as the `grpokit` command does); tunables:
# BASELINE.md's setting for both; grpokit: grpokit's setting for both.
ALLOCATORS = {"default": None, "tunables": TUNABLES, "grpokit": GRPOKIT_TUNABLES}
DEFAULT_ASSETS = "/tmp/grpo_assets"
DEFAULT_TRL_PYTHON = "/tmp/grpo-bench-venv/bin/python"
# BASELINE.md's TRL 1.16 medians (s/step, clean runs) and prompt lengths, shown for context.
TRL_REFERENCE = {"tiny": "0.256-0.329 s/step, 616 MiB", "small": "14.18-14.55 s/step (9.43 with GLIBC_TUNABLES), 4661 MiB"}


@dataclass(frozen=True)
class Workload:
    name: str
    max_new_tokens: int
    prompt_tokens: int  # every prompt of the data file has this many tokens (BASELINE.md)
    prompts_per_step: int = 4
    num_generations: int = 8
    data_file: str = "arith_512.jsonl"
    reward: str = "grpokit.bench.run:any_integer_reward"
    dtype: str = "float32"
    micro_batch_size: int = 0
    device: str = "cpu"
    model_dir: str = ""  # folder under assets/models (default: the name)
    overrides: tuple = ()  # config keys the workload sets on top of the shared ones
    trl_script: str = ""  # TRL side, relative to the repo root (default: shared/bench/trl_baseline.py)

    @property
    def model(self) -> str:
        return self.model_dir or self.name


# W1 and W2 of BASELINE.md (CPU), and a GPU workload whose assets `grpokit.bench.gpu` builds:
# a randomly initialised Qwen2 of Qwen2.5-0.5B's shape in bf16, 16 prompts x 8 completions
# of 256 tokens per step.
WORKLOADS = {
    "tiny": Workload("tiny", 32, 22),
    "small": Workload("small", 64, 7),
    "qwen2-0.5b": Workload("qwen2-0.5b", 256, 64, prompts_per_step=16, data_file="prompts.jsonl",
                           reward="grpokit.bench.gpu:hash_reward", dtype="bfloat16", micro_batch_size=32,
                           device="cuda"),
    # W3: a real pretrained model (grpokit.bench.smollm2), chat-rendered prompts
    "smollm2": Workload("smollm2", 128, 0, prompts_per_step=8, num_generations=4, data_file="smollm2_chat_512.jsonl",
                        model_dir="smollm2-135m", overrides=("data.chat_template=off",),
                        trl_script="benchmarks/trl_smollm2.py"),
}

_INT_RE = re.compile(r"-?\d+")


def any_integer_reward(completion: str, *, answer: Any, **_: Any) -> float:
    """1.0 if any integer in the completion (regex -?\\d+) equals the answer, else 0.0
    (the reward of shared/bench/trl_baseline.py)."""
    target = int(answer)
    return 1.0 if any(int(m) == target for m in _INT_RE.findall(completion)) else 0.0


REWARD_SPEC = "grpokit.bench.run:any_integer_reward"


# --------------------------------------------------------------------------- one grpokit run (in-process)


def workload_config(workload: Workload, assets: Path, *, steps: int, seed: int, threads: int, out: str,
                    overrides: Sequence[str] = ()):
    """The TrainConfig of a BASELINE workload, built like `grpokit train` builds one."""
    from grpokit.config.schema import TrainConfig
    from grpokit.config import ConfigError, load_config, validate

    data = {
        "model.name_or_path": str(assets / "models" / workload.model),
        "model.dtype": workload.dtype,
        "model.device": workload.device,
        "data.train": str(assets / "data" / workload.data_file),
        "rewards": [{"name": workload.reward, "weight": 1.0}],
        "rollout.num_generations": workload.num_generations,
        "rollout.prompts_per_step": workload.prompts_per_step,
        "rollout.max_new_tokens": workload.max_new_tokens,
        "rollout.temperature": 1.0,
        "rollout.top_p": 1.0,
        # TRL 1.16 defaults: loss_type "dapo" (token mean), scale_rewards "group",
        # epsilon 0.2 on both sides, num_iterations 1, k3 KL.
        "algorithm.preset": "dapo",
        "algorithm.clip_low": 0.2,
        "algorithm.clip_high": 0.2,
        "algorithm.scale_rewards": "group",
        "algorithm.beta": 0.04,
        "algorithm.kl_estimator": "k3",
        "algorithm.mu": 1,
        "optim.lr": 1e-5,
        "optim.schedule": "linear",
        "optim.warmup_steps": 0,
        "optim.weight_decay": 0.0,
        "optim.max_grad_norm": 1.0,
        "optim.micro_batch_size": workload.micro_batch_size,
        "run.steps": steps,
        "run.seed": seed,
        "run.threads": threads,
        "run.out": out,
        "run.progress": False,
    }
    cfg = load_config(TrainConfig, None, [*workload.overrides, *overrides], data=data)
    problems = validate(cfg)
    if problems:
        raise ConfigError("benchmark config has problems:\n  - " + "\n  - ".join(problems))
    return cfg


class _Recorder:
    """train() hooks: per-step wall time, phase times, positions per phase, RSS, faults."""

    def __init__(self, total_steps: int, model_dir: Path, workload: Workload):
        self.total_steps = total_steps
        self.model_dir = model_dir
        self.workload = workload
        self.steps: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}
        self.count = defaultdict(int)  # this step: positions / head rows / calls per phase
        self.cpu0 = self.cpu1 = None
        self.t_start = self.t_end = 0.0

    # -- hooks
    def on_start(self, comp) -> None:
        import torch

        policy = comp.policy.model
        n_total = sum(p.numel() for p in policy.parameters())
        n_embed = policy.get_input_embeddings().weight.numel()
        n_head = policy.get_output_embeddings().weight.numel()
        tied = bool(getattr(policy.config, "tie_word_embeddings", False))
        n_matmul = n_total if tied else n_total - n_embed
        self.params = {"total": n_total, "matmul": n_matmul, "body": n_matmul - n_head, "lm_head": n_head,
                       "tied": tied}
        self.info["tokenizer"] = self._check_tokenizer(comp.policy.tokenizer, comp.train_examples)

        # Positions are counted where token ids enter the model, at the input embedding:
        # both transformers' forward and grpokit's lean decode step go through it once per call.
        def hook(kind: str):
            def pre(module, args, kwargs):
                ids = args[0] if args else kwargs.get("input", kwargs.get("input_ids"))
                bsz, n = ids.shape[0], ids.numel()
                phase = kind if kind == "ref" else ("train" if torch.is_grad_enabled() else "gen")
                self.count[f"{phase}_calls"] += 1
                self.count[f"{phase}_positions"] += n
                if phase == "gen":  # prefill keeps 1 logit row per sequence; decode feeds 1 token
                    self.count["gen_head_rows"] += bsz
            return pre

        self._handles = [policy.get_input_embeddings().register_forward_pre_hook(hook("policy"), with_kwargs=True)]
        if comp.reference is not None and comp.reference.model is not policy:
            ref_emb = comp.reference.model.get_input_embeddings()
            self._handles.append(ref_emb.register_forward_pre_hook(hook("ref"), with_kwargs=True))
        self.info["reference"] = "none" if comp.reference is None else (
            "adapter-disabled base" if comp.reference.model is policy else "frozen copy")
        self.cpu0 = cpu_snapshot()
        self.flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self.t_start = self.t_last = time.perf_counter()

    def on_step(self, step: int, metrics: dict, batch) -> None:
        now = time.perf_counter()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        c, self.count = self.count, defaultdict(int)
        n, length = batch.input_ids.shape
        p = batch.prompt_len
        comp_len = length - p  # longest completion
        tokens = int(batch.loss_mask.sum())  # completion tokens, EOS included
        trained = int(metrics.get("trained_rows", n))
        pm = self.params
        # BASELINE "simple": TRL's position counts for a batch of this shape.
        gen_pos = n * p + n * (comp_len - 1)
        simple = 2 * pm["matmul"] * (gen_pos + n * length) + 6 * pm["matmul"] * n * length
        head_train = tokens if trained == n else tokens * trained / max(n, 1)  # approx. when rows were skipped
        executed = (2 * (pm["body"] * c["gen_positions"] + pm["lm_head"] * c["gen_head_rows"])
                    + 2 * (pm["body"] * c["ref_positions"] + pm["lm_head"] * tokens * (c["ref_calls"] > 0))
                    + 6 * (pm["body"] * c["train_positions"] + pm["lm_head"] * head_train))
        m = metrics
        self.steps.append({
            "step": step,
            "wall_s": now - self.t_last,
            "generate_s": m.get("time/generate", 0.0),
            "reward_s": m.get("time/reward_group_adv", 0.0),
            "ref_fwd_s": m.get("time/reference", 0.0),
            "policy_fwd_s": m.get("time/policy_forward", float("nan")),
            "backward_s": m.get("time/backward", float("nan")),  # includes grad-norm clipping, as in TRL's split
            "optimizer_s": m.get("time/optimizer", float("nan")),
            "update_s": m.get("time/update", 0.0),
            "completion_tokens": tokens,
            "prompt_len": p,
            "completion_len_max": comp_len,
            "gen_forward_calls": int(batch.metadata.get("forward_calls", c["gen_calls"])),
            "gen_positions_simple": gen_pos,
            "gen_positions_executed": c["gen_positions"],
            "gen_head_rows_executed": c["gen_head_rows"],
            "ref_positions": c["ref_positions"],
            "train_positions": c["train_positions"],
            "trained_rows": trained,
            "mean_reward": m.get("reward", 0.0),
            "flops_simple": simple,
            "flops_executed": executed,
            "rss_mib": _current_rss_mib(),
            "peak_rss_mib": ru.ru_maxrss / 1024.0,
            "minor_faults": ru.ru_minflt - self.flt,
        })
        s = self.steps[-1]
        s["loop_other_s"] = s["wall_s"] - s["generate_s"] - s["reward_s"] - s["ref_fwd_s"] - s["update_s"]
        self.flt = ru.ru_minflt
        if step == self.total_steps:
            self.cpu1 = cpu_snapshot()
            self.t_end = time.perf_counter()
            for h in self._handles:
                h.remove()
        self.t_last = time.perf_counter()

    def _check_tokenizer(self, tok, examples) -> dict[str, Any]:
        """The tokenizer grpokit loaded must tokenize like the one trl_baseline.py passes to
        TRL (PreTrainedTokenizerFast on the same folder), or the workloads differ."""
        from transformers import PreTrainedTokenizerFast

        ref = PreTrainedTokenizerFast.from_pretrained(str(self.model_dir))
        probes = [e.prompt for e in examples[:16]] + ["Compute 51-29. Answer: 22 and  7\n"]
        for text in probes:
            a = tok(text)["input_ids"]
            b = ref(text)["input_ids"]
            if list(a) != list(b):
                raise RuntimeError(f"grpokit's tokenizer ({type(tok).__name__}) differs from the saved one on "
                                   f"{text!r}: {len(a)} vs {len(b)} tokens; the workloads would not be the same")
        n = len(tok(examples[0].prompt)["input_ids"])
        if self.workload.prompt_tokens and n != self.workload.prompt_tokens:
            print(f"[bench] WARNING: prompt is {n} tokens; BASELINE.md says {self.workload.prompt_tokens}",
                  flush=True)
        return {"class": type(tok).__name__, "vocab": len(tok), "prompt_tokens": n,
                "matches_trl_baseline_tokenizer": True}


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return float("nan")


def run_grpokit(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run in this process. OMP/MKL thread counts must be set before torch loads."""
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from grpokit import __version__
    from grpokit.train import train

    torch.set_num_threads(args.threads)
    workload = WORKLOADS[args.workload]
    assets = Path(args.assets)
    out = tempfile.mkdtemp(prefix=f"grpokit_bench_{workload.name}_")
    cfg = workload_config(workload, assets, steps=args.steps, seed=args.seed, threads=args.threads, out=out,
                          overrides=args.overrides)
    rec = _Recorder(args.steps, assets / "models" / workload.model, workload)
    t0 = time.perf_counter()
    try:
        train(cfg, hooks=rec)
    finally:
        if not args.keep_run_dir:
            shutil.rmtree(out, ignore_errors=True)
    total = time.perf_counter() - t0
    peak_process = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    meas = rec.steps[args.warmup:]
    walls = [s["wall_s"] for s in meas]
    wall = summarize(walls)
    comp_keys = ["generate_s", "ref_fwd_s", "reward_s", "policy_fwd_s", "backward_s", "optimizer_s", "update_s",
                 "loop_other_s", "completion_tokens", "gen_forward_calls", "gen_positions_simple",
                 "gen_positions_executed", "gen_head_rows_executed", "ref_positions", "train_positions",
                 "flops_simple", "flops_executed", "minor_faults", "prompt_len", "completion_len_max"]
    comp = {k: statistics.median([s[k] for s in meas]) for k in comp_keys}
    loop_seconds = rec.t_end - rec.t_start
    result: dict[str, Any] = {
        "impl": "grpokit", "grpokit": __version__, "model": workload.name,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "cpu": cpu_name(),
                     "torch_threads": torch.get_num_threads(), "os_cpu_count": os.cpu_count()},
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "overrides": list(args.overrides),
        "params": rec.params, "info": rec.info,
        "steps": args.steps, "warmup": args.warmup, "train_total_s": total, "loop_s": loop_seconds,
        "wall_per_step_s": wall,
        "completion_tokens_per_s": summarize([s["completion_tokens"] / s["wall_s"] for s in meas]),
        "completion_tokens_per_generate_s": summarize([s["completion_tokens"] / s["generate_s"] for s in meas]),
        "median_components_s": comp,
        "generation_share_of_wall": comp["generate_s"] / wall["median"],
        # peak of the training loop (before the final checkpoint is written)
        "peak_rss_mib": rec.steps[-1]["peak_rss_mib"],
        "peak_rss_process_mib": peak_process,
        "machine_load": machine_load(rec.cpu0, rec.cpu1, loop_seconds),
        "per_step": rec.steps,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        result["gpu"] = {"name": torch.cuda.get_device_name(),
                         "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2 ** 20,
                         "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2 ** 20}
    result["achieved_flops_per_s"] = {"simple": comp["flops_simple"] / wall["median"],
                                      "executed": comp["flops_executed"] / wall["median"]}
    ceiling = read_ceiling(args.ceiling_json)
    if ceiling:
        result["ceiling_flops_per_s"] = ceiling
        result["fraction_of_ceiling"] = {k: v / ceiling for k, v in result["achieved_flops_per_s"].items()}
    print_run_report(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.json_out}")
    return result


def read_ceiling(path: str | None) -> float | None:
    if path and os.path.exists(path):
        return float(json.loads(Path(path).read_text())["ceiling_flops_per_s"])
    return None


def print_run_report(r: dict[str, Any]) -> None:
    hdr = ["step", "wall_s", "generate_s", "ref_fwd_s", "policy_fwd_s", "backward_s", "optimizer_s",
           "loop_other_s", "completion_tokens", "gen_forward_calls", "rss_mib", "minor_faults"]
    print("\n== per step (s)")
    print(" ".join(f"{h:>13}" for h in hdr))
    for s in r["per_step"]:
        print(" ".join(f"{s[h]:>13.4f}" if isinstance(s[h], float) else f"{s[h]:>13}" for h in hdr))
    w, c = r["wall_per_step_s"], r["median_components_s"]
    print(f"\n== RESULT grpokit model={r['model']} steps={r['steps']} (stats over steps {r['warmup'] + 1}.."
          f"{r['steps']}, n={w['n']}) GLIBC_TUNABLES={r['glibc_tunables'] or '(unset)'}")
    print(f"wall s/optimizer step: median {w['median']:.3f}  min {w['min']:.3f}  max {w['max']:.3f}  "
          f"mean {w['mean']:.3f}")
    print(f"completion tokens/s: median {r['completion_tokens_per_s']['median']:.1f} per wall step, "
          f"{r['completion_tokens_per_generate_s']['median']:.1f} inside generation "
          f"(median {c['completion_tokens']:.0f} completion tokens/step incl. EOS)")
    print("median s/step: " + ", ".join(f"{k[:-2]} {c[k]:.3f}" for k in
                                        ("generate_s", "ref_fwd_s", "reward_s", "policy_fwd_s", "backward_s",
                                         "optimizer_s", "loop_other_s")))
    a = r["achieved_flops_per_s"]
    print(f"FLOPs/step: simple {c['flops_simple'] / 1e9:.2f} G (BASELINE formula), executed "
          f"{c['flops_executed'] / 1e9:.2f} G -> {a['simple'] / 1e9:.1f} / {a['executed'] / 1e9:.1f} GFLOP/s")
    if "fraction_of_ceiling" in r:
        f = r["fraction_of_ceiling"]
        print(f"fraction of matmul ceiling ({r['ceiling_flops_per_s'] / 1e9:.1f} GFLOP/s): simple "
              f"{f['simple'] * 100:.1f}%, executed {f['executed'] * 100:.1f}%")
    ml = r["machine_load"]
    print(f"peak RSS {r['peak_rss_mib']:.0f} MiB (training loop; {r['peak_rss_process_mib']:.0f} MiB incl. the "
          f"final save); minor faults/step {c['minor_faults']:.0f}; tokenizer {r['info']['tokenizer']['class']} "
          f"({r['info']['tokenizer']['prompt_tokens']}-token prompt); reference: {r['info']['reference']}")
    print(f"CPU during the loop: this process {ml['own_cores_avg']:.2f} cores avg; other processes "
          f"{ml['foreign_cores_avg']:.2f} cores avg; steal {ml['steal_s']:.1f} s; loadavg {ml['loadavg_before']} "
          f"-> {ml['loadavg_after']}")
    if ml["foreign_cores_avg"] > 0.05:
        print("WARNING: other processes used CPU during the run; these timings are contaminated.")


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grpokit bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="tiny",
                   help="tiny (W1: 1M params, char vocab, 32 tokens), small (W2: 56M params, 32k vocab, 64 tokens), "
                        "smollm2 (W3: SmolLM2-135M-Instruct, 8x4 completions of 128 tokens; grpokit.bench.smollm2), "
                        "or qwen2-0.5b (GPU: random Qwen2.5-0.5B shape, bf16, 16x8 completions of 256 tokens; "
                        "see grpokit.bench.gpu)")
    p.add_argument("--assets", default=DEFAULT_ASSETS, help="output folder of shared/bench/make_assets.py")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per run (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the statistics (default 2)")
    p.add_argument("--repeats", type=int, default=1, help="runs per implementation and allocator, alternating")
    p.add_argument("--allocator", choices=("default", "tunables", "grpokit", "both", "all"), default=None,
                   help=f"glibc malloc settings of the runs: default (none set; grpokit sets its own, "
                        f"GLIBC_TUNABLES={GRPOKIT_TUNABLES}, as the grpokit command does), tunables "
                        f"(GLIBC_TUNABLES={TUNABLES} for both), grpokit (grpokit's setting for both, TRL too), "
                        "both (default and tunables) or all three (default: both with --vs-trl, else default)")
    p.add_argument("--vs-trl", action="store_true", help="also run TRL (trl_baseline.py), alternating, and print ratios")
    p.add_argument("--trl-python", default=DEFAULT_TRL_PYTHON, help="Python of a venv with TRL (BASELINE.md)")
    p.add_argument("--trl-script", default=None, help="path of trl_baseline.py (default: shared/bench/ near the repo)")
    p.add_argument("--ceiling-json", default=None, help="reuse a ceiling measurement (flops_ceiling.py --json-out)")
    p.add_argument("--no-ceiling", action="store_true", help="do not measure the matmul ceiling")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json-out", default=None, help="write the results as JSON")
    p.add_argument("--log-dir", default=None, help="folder for each run's log and JSON (default: a temp folder)")
    p.add_argument("--wait-idle", dest="wait_idle", action="store_true", default=True,
                   help="wait for an idle machine before each run (default)")
    p.add_argument("--no-wait-idle", dest="wait_idle", action="store_false")
    p.add_argument("--idle-timeout", type=float, default=600.0, help="seconds to wait for an idle machine")
    p.add_argument("--max-foreign", type=float, default=0.05,
                   help="a run during which other processes used more cores than this is repeated")
    p.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run")
    p.add_argument("--keep-run-dir", action="store_true", help="keep grpokit's run directory (metrics.jsonl)")
    p.add_argument("--variants", default="graphs,lean,transformers",
                   help="GPU workloads: comma-separated sampling variants of grpokit.bench.gpu "
                        "(graphs, lean, transformers; vllm where vLLM is installed)")
    p.add_argument("--in-process", action="store_true",
                   help="run one grpokit measurement in this process (what each child run does)")
    p.add_argument("--measure-ceiling", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="grpokit config overrides on top of the workload (e.g. optim.micro_batch_size=8); "
                        "the run then no longer is the BASELINE workload")
    return p
